"""``nlp-transfer predict``: predictions of a saved run for texts in a file or on standard input, streamed in chunks."""

from __future__ import annotations

import argparse
import os
import sys

from nlp_transfer.cli.common import add_run_arguments, positive_int, setup_logging


def predict_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(
        prog="nlp-transfer predict",
        description="Predict labels and class probabilities for texts with a saved run (PyTorch or ONNX export). Reads CSV, "
        "TSV, JSONL, JSON, Parquet or plain lines (one text each) from a file or standard input; writes CSV (one "
        "prob_<label> column per class) or JSONL, in input order. The input is read and predicted --chunk-size rows "
        "at a time and the output written as it goes (to OUT.partial, renamed to OUT when complete), so memory does "
        "not grow with the input; --resume continues an interrupted output. Under accelerate launch or torchrun "
        "(several processes, one or many machines sharing the output's filesystem) the chunks are shared out and the "
        "main process merges one ordered output.",
        epilog="examples:\n  nlp-transfer predict runs/rt-minilm-full reviews.csv -o predictions.csv\n"
        "  echo 'a gorgeous, moving film' | nlp-transfer predict runs/rt-minilm-full --output-format jsonl\n"
        "  nlp-transfer predict runs/rt-minilm-full big.parquet -o big.csv --resume   # after an interruption\n"
        "  torchrun --nproc_per_node 4 -m nlp_transfer predict runs/rt-minilm-full big.csv -o big.csv   # 4 processes\n"
        "  accelerate launch --config_file $(nlp-transfer recipes --accelerate multi-gpu) -m nlp_transfer predict runs/rt-minilm-full big.csv -o big.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(p)
    p.add_argument("input", nargs="?", default="-", help="file with the texts, or - for standard input (default)")
    p.add_argument("-o", "--output", help="output file, .csv or .jsonl (default: standard output)")
    p.add_argument("--output-format", choices=("csv", "jsonl"), help="default: from --output's extension, else csv")
    p.add_argument("--id-column", help="copy this input column to the output (e.g. an id)")
    p.add_argument(
        "--explain",
        action="store_true",
        help="also write each text's word attributions towards its predicted label (Integrated Gradients on the "
        "token embeddings, captum): attributions ([word, value] pairs; a JSON list in CSV) and attribution_delta "
        "(captum's convergence delta); about 50 forward and backward passes per text",
    )
    p.add_argument(
        "--no-calibration",
        action="store_true",
        help="raw probabilities: skip the temperature (per-label Platt scaling for multi-label runs) fitted on "
        "validation after training; the predicted labels are the same either way",
    )
    p.add_argument(
        "--chunk-size",
        type=positive_int,
        default=10_000,
        help="rows read, predicted and written at a time (default: 10000); memory grows with it, not with the input",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted prediction into -o: rows already in OUT.partial are kept and skipped in "
        "the input (same processes and, with several, the same --chunk-size)",
    )
    args = p.parse_intermixed_args(argv)
    from nlp_transfer.data.stream import iter_inputs
    from nlp_transfer.inference.predictor import check_run_dir, load_run
    from nlp_transfer.inference.streaming import predict_stream
    from nlp_transfer.inference.textio import output_format

    check_run_dir(args.run)  # fail fast, before reading the input
    if args.explain and args.text_pair_column:
        from nlp_transfer.errors import ConfigError

        raise ConfigError("--explain explains single texts; sentence pairs (--text-pair-column) are not explained: drop one of them")
    fmt = output_format(args.output, args.output_format)
    rank, world, barrier, device = _processes(args.device)
    chunks = iter_inputs(
        args.input, args.format, args.text_column, args.text_pair_column, id_column=args.id_column, chunk_rows=args.chunk_size
    )
    first = next(chunks)  # the input's problems (missing, empty, no such column) before the model loads
    setup_logging()
    predictor = load_run(args.run, device=device, precision=args.precision, calibrated=not args.no_calibration)
    result = predict_stream(
        predictor,
        _prepend(first, chunks),
        args.output,
        fmt,
        resume=args.resume,
        rank=rank,
        world=world,
        chunk_rows=args.chunk_size,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        barrier=barrier,
        explain=args.explain,
    )
    if rank == 0:
        resumed = f" (resumed: {result.skipped:,} rows were already there)" if result.skipped else ""
        done = (
            "already complete, nothing to do"
            if args.resume and result.predicted == 0 and result.rows is None
            else (f"{result.rows:,} predictions ({fmt}){resumed}")
        )
        procs = f" on {world} processes" if world > 1 else ""
        print(f"{done} -> {result.output}{procs} in {result.seconds:.1f}s", file=sys.stderr)


def _prepend(first, rest):
    yield first
    yield from rest


def _processes(device: str | None):
    """(rank, world size, barrier, device) of a distributed launch (accelerate launch, torchrun); one process otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, None, device
    import torch
    from accelerate import PartialState

    # Without a GPU (or asked for the CPU), gloo processes; torchrun does not tell accelerate so itself.
    state = PartialState(cpu=(device or "").startswith("cpu") or not torch.cuda.is_available())
    return state.process_index, state.num_processes, state.wait_for_everyone, device or str(state.device)
