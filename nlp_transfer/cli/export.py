"""``nlp-transfer export``: a run in another form; ``--merge`` folds an adapter into the weights, ``--onnx`` writes ONNX."""

from __future__ import annotations

import argparse
import sys

from nlp_transfer.cli.common import setup_logging
from nlp_transfer.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nlp-transfer export",
        description="Export a saved run. --merge: fold the adapter of a lora, dora or ia3 run into the base weights "
        "and write an ordinary run (no base checkpoint needed; loads with load_run, and with plain "
        "AutoModelForSequenceClassification where pooling and head are the architecture's own). The merged "
        "logits are checked against the adapter run's before anything is written. --onnx: write the whole "
        "classifier (backbone, pooling, head: tokens in, logits out, dynamic batch and sequence axes) as "
        "model.onnx with the tokenizer and manifest; load_run(OUT) and nlp-transfer predict OUT then run it on "
        "onnxruntime, with the same batching, long-text chunking and post-processing. Its logits are checked "
        "against PyTorch's (fp32, within 1e-4) before anything is written. Adapter runs: --merge first.",
        epilog="examples:\n  nlp-transfer export runs/rt-minilm-lora runs/rt-minilm-lora-merged --merge\n"
        "  nlp-transfer export runs/rt-minilm-full runs/rt-minilm-onnx --onnx\n"
        "  nlp-transfer export runs/rt-minilm-full runs/rt-minilm-onnx-int8 --onnx --quantize int8",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run directory written by nlp-transfer train (its output.dir)")
    p.add_argument("output", help="directory to write (must not exist, unless --overwrite)")
    p.add_argument("--merge", action="store_true", help="merge the adapter into the weights (adapter runs)")
    p.add_argument("--onnx", action="store_true", help="write an ONNX model for onnxruntime (full or merged runs)")
    p.add_argument(
        "--quantize",
        choices=("int8",),
        help="with --onnx: int8 (dynamic or calibrated static quantization, sensitive nodes kept in fp32 as needed: "
        "the fastest that keeps --agreement of the fp32 labels on the validation texts)",
    )
    p.add_argument(
        "--agreement",
        type=float,
        default=0.995,
        help="with --quantize int8: the share of validation texts whose fp32 label the int8 graph must keep (default: 0.995)",
    )
    p.add_argument(
        "--calibration-data",
        metavar="FILE",
        help="with --quantize int8: texts (CSV, JSON Lines, Parquet, plain lines) to calibrate and check int8 on "
        "(default: the run's validation split)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16"),
        default="fp32",
        help="with --onnx: fp16 writes a float16 graph for GPU execution providers (CUDA, TensorRT; most CPU kernels are fp32 only)",
    )
    p.add_argument(
        "--no-optimize",
        action="store_true",
        help="with --onnx: skip onnxruntime's transformer optimizer (fused attention, LayerNorm, GELU on BERT-style encoders)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the output directory if it exists")
    return p


def export_main(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    if not (args.merge or args.onnx):
        raise ConfigError(
            "choose what to export: --merge (fold an adapter run's adapter into the weights) or --onnx (an ONNX model for onnxruntime)"
        )
    if args.merge and args.onnx:
        raise ConfigError(
            "choose one of --merge and --onnx; for ONNX from an adapter run, --merge into a new run first, then --onnx on that run"
        )
    for flag, given in (("--quantize", args.quantize), ("--precision", args.precision != "fp32"), ("--no-optimize", args.no_optimize)):
        if given and not args.onnx:
            raise ConfigError(f"{flag} applies to --onnx exports; add --onnx")
    if args.calibration_data and not args.quantize:
        raise ConfigError("--calibration-data applies to --quantize int8; add it or drop --calibration-data")
    if args.onnx:
        from nlp_transfer.utils.extras import require_extra

        require_extra("onnx", "nlp-transfer export --onnx", ConfigError)
    setup_logging()
    if args.onnx:
        from nlp_transfer.inference.export import export_onnx

        texts = None
        if args.calibration_data:
            from nlp_transfer.data.reader import read_inputs

            texts = read_inputs(args.calibration_data).texts
        print(f"exporting {args.run} to ONNX ...", file=sys.stderr, flush=True)
        r = export_onnx(
            args.run,
            args.output,
            quantize=args.quantize,
            overwrite=args.overwrite,
            optimize=not args.no_optimize,
            agreement=args.agreement,
            calibration_texts=texts,
            precision=args.precision,
            say=lambda line: print(line, file=sys.stderr, flush=True),
        )
        _report(args.run, r)
        return
    from nlp_transfer.inference.export import merge_run

    result = merge_run(args.run, args.output, overwrite=args.overwrite)
    loads = (
        f"loads with load_run and AutoModelForSequenceClassification ({result.transformers_class})"
        if result.transformers_class
        else "loads with load_run"
    )
    print(
        f"merged {args.run} -> {result.output_dir}: {loads}; largest logit difference against the adapter run "
        f"{result.max_logit_difference:.1e}",
        file=sys.stderr,
    )


def _report(run: str, r) -> None:
    fused = ", ".join(f"{v} {k}" for k, v in r.optimized["fused"].items()) if r.optimized else None
    graph = f"optimized ({fused})" if fused else "not optimized (no onnxruntime fusions for this architecture)"
    kind = r.precision
    if r.int8:
        kind = f"int8 ({r.int8['method']} quantization, {len(r.int8['nodes_excluded'])} node(s) kept in fp32)"
    print(
        f"exported {run} -> {r.output_dir}/model.onnx ({kind}, {r.size_bytes / 1e6:.1f} MB, {graph}): loads with load_run and "
        f"nlp-transfer predict on onnxruntime; the fp32 graph's largest logit difference against PyTorch {r.max_logit_difference:.1e}",
        file=sys.stderr,
    )
    if r.int8:
        q = r.int8
        print(
            f"int8 label agreement with the fp32 graph: {100 * q['agreement']:.2f}% of {q['evaluation_texts']} validation texts "
            f"(target {100 * q['target']:.2f}%), {q['speedup_over_fp32_graph']:.2f}x the fp32 graph's speed there",
            file=sys.stderr,
        )
    if r.precision == "fp16":
        print("fp16 graph: for GPU execution providers (onnxruntime-gpu); on CPU most of its kernels do not exist", file=sys.stderr)
