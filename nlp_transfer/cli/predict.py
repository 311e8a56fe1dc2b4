"""``scripts/predict.py``: predictions of a saved run for texts in a file or on standard input."""

from __future__ import annotations

import argparse
import sys

from nlp_transfer.cli.common import add_run_arguments, setup_logging


def predict_main(argv: list[str]) -> None:
    import time

    p = argparse.ArgumentParser(
        prog="scripts/predict.py",
        description="Predict labels and class probabilities for texts with a saved run. Reads CSV, TSV, JSONL, "
        "JSON or plain lines (one text each) from a file or standard input; writes CSV (one prob_<label> column "
        "per class) or JSONL, in input order.",
        epilog="examples:\n  python scripts/predict.py runs/rt-minilm-full reviews.csv -o predictions.csv\n"
        "  echo 'a gorgeous, moving film' | python scripts/predict.py runs/rt-minilm-full --output-format jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(p)
    p.add_argument("input", nargs="?", default="-", help="file with the texts, or - for standard input (default)")
    p.add_argument("-o", "--output", help="output file, .csv or .jsonl (default: standard output)")
    p.add_argument("--output-format", choices=("csv", "jsonl"), help="default: from --output's extension, else csv")
    p.add_argument("--id-column", help="copy this input column to the output (e.g. an id)")
    p.add_argument("--explain", action="store_true",
                   help="also write each text's word attributions towards its predicted label (Integrated Gradients on the "
                   "token embeddings, captum): attributions ([word, value] pairs; a JSON list in CSV) and attribution_delta "
                   "(captum's convergence delta); about 50 forward and backward passes per text")
    p.add_argument("--no-calibration", action="store_true",
                   help="raw probabilities: skip the temperature (per-label Platt scaling for multi-label runs) fitted on "
                   "validation after training; the predicted labels are the same either way")
    args = p.parse_intermixed_args(argv)
    from nlp_transfer.data.reader import read_inputs
    from nlp_transfer.inference.predictor import check_run_dir, load_run
    from nlp_transfer.inference.textio import prediction_rows, write_predictions

    check_run_dir(args.run)  # fail fast, before reading the input
    if args.explain and args.text_pair_column:
        from nlp_transfer.errors import ConfigError

        raise ConfigError("--explain explains single texts; sentence pairs (--text-pair-column) are not explained: drop one of them")
    inputs = read_inputs(args.input, args.format, args.text_column, args.text_pair_column, id_column=args.id_column)
    setup_logging()

    t0 = time.perf_counter()
    predictor = load_run(args.run, device=args.device, precision=args.precision, calibrated=not args.no_calibration)
    preds = predictor.predict(inputs.texts, text_pairs=inputs.text_pairs, batch_size=args.batch_size, progress=not args.no_progress)
    rows = prediction_rows(inputs, preds)
    if args.explain:
        explanations = predictor.explain(inputs.texts, progress=not args.no_progress)
        rows = [{**row, **ex.to_record()} for row, ex in zip(rows, explanations)]
    fmt = write_predictions(rows, predictor.labels, args.output, args.output_format)
    where = args.output if args.output not in (None, "-") else "standard output"
    print(f"{len(preds):,} predictions ({fmt}) -> {where} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)


