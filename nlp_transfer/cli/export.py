"""``nlp-transfer export``: a run in another form; ``--merge`` folds an adapter into the weights, ``--onnx`` writes ONNX."""

from __future__ import annotations

import argparse
import sys

from nlp_transfer.cli.common import setup_logging
from nlp_transfer.errors import ConfigError


def export_main(argv: list[str]) -> None:
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
    p.add_argument("--quantize", choices=("int8",), help="with --onnx: dynamic int8 quantization of the weights (smaller, faster on CPU)")
    p.add_argument("--overwrite", action="store_true", help="replace the output directory if it exists")
    args = p.parse_args(argv)
    if not (args.merge or args.onnx):
        raise ConfigError(
            "choose what to export: --merge (fold an adapter run's adapter into the weights) or --onnx (an ONNX model for onnxruntime)"
        )
    if args.merge and args.onnx:
        raise ConfigError(
            "choose one of --merge and --onnx; for ONNX from an adapter run, --merge into a new run first, then --onnx on that run"
        )
    if args.quantize and not args.onnx:
        raise ConfigError("--quantize applies to --onnx exports; add --onnx")
    if args.onnx:
        from nlp_transfer.utils.extras import require_extra

        require_extra("onnx", "nlp-transfer export --onnx", ConfigError)
    setup_logging()
    if args.onnx:
        from nlp_transfer.inference.export import export_onnx

        print(f"exporting {args.run} to ONNX ...", file=sys.stderr, flush=True)
        r = export_onnx(args.run, args.output, quantize=args.quantize, overwrite=args.overwrite)
        kind = "int8 (dynamic quantization)" if r.quantize else "fp32"
        print(
            f"exported {args.run} -> {r.output_dir}/model.onnx ({kind}, {r.size_bytes / 1e6:.1f} MB): loads with load_run and "
            f"nlp-transfer predict on onnxruntime; largest logit difference against PyTorch {r.max_logit_difference:.1e}",
            file=sys.stderr,
        )
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
