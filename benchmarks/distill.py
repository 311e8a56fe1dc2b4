"""Compression, side by side in one run: distilled students against their teachers.

    python -m benchmarks distill --teacher runs/rt-smollm2-lora --student runs/rt-minilm-distill-smollm2 \\
        --student runs/rt-minilm3-distill-smollm2

For every run (teachers first): parameters, layers, run directory size, test accuracy and macro F1 (from its
metrics.json), agreement with its teachers on test and the share of their accuracy it keeps (a student's
metrics.json), and prediction throughput on the run's own test texts, each in a fresh process: PyTorch on the
run's default path (``load_run``: its training precision) and, for students, the ONNX int8 export
(``nlp-transfer export --quantize int8``: the int8 variant chosen against 99.5% validation agreement). Ratios
are against the first teacher's PyTorch throughput.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from benchmarks import harness, ship

NAME = "distill"
HELP = "distilled students against their teachers: size, layers, accuracy, agreement, PyTorch and ONNX int8 texts/s"


def add_arguments(p) -> None:
    p.add_argument("--teacher", action="append", required=True, metavar="RUN", help="a teacher run directory (repeat for several)")
    p.add_argument("--student", action="append", required=True, metavar="RUN", help="a student run directory (repeat for several)")
    p.add_argument("--no-onnx", action="store_true", help="skip the students' ONNX int8 exports")
    p.add_argument("--max-texts", type=int, default=None, help="predict at most this many test texts (default: the whole split)")


def _record(run: Path) -> dict:
    from nlp_transfer.reporting.tables import run_layers, run_size_mb

    m = json.loads((run / "metrics.json").read_text())
    distilled = (m.get("distillation") or {}).get("test") or {}
    return {
        "name": m.get("name") or run.name,
        "parameters": (m.get("parameters") or {}).get("total"),
        "layers": run_layers(run),
        "size_mb": run_size_mb(run),
        "accuracy": m["test"]["accuracy"],
        "f1_macro": m["test"]["f1_macro"],
        "agreement": distilled.get("agreement"),
        "kept": distilled.get("kept"),
    }


def run(args) -> dict:
    from nlp_transfer.inference.export import export_onnx

    work = Path(tempfile.mkdtemp(prefix="nlp-transfer-distill-"))
    rows = {}
    for role, runs in (("teacher", args.teacher), ("student", args.student)):
        for path in runs:
            run_dir = Path(path)
            if not (run_dir / "metrics.json").is_file():
                raise SystemExit(f"error: '{run_dir}' is not a finished run directory; train it first")
            row = {"role": role, **_record(run_dir)}
            spec = {"source_run": str(run_dir), "max_texts": args.max_texts, "warmup": 32, "threads": args.threads}
            row["torch"] = harness.run_child(ship.predict, {**spec, "run": str(run_dir), "variant": f"{row['name']} PyTorch"})
            if role == "student" and not args.no_onnx:
                harness.say(f"  exporting {row['name']} to ONNX int8 ...")
                exported = export_onnx(str(run_dir), work / f"{run_dir.name}-int8", quantize="int8", say=harness.say)
                row["onnx_int8"] = harness.run_child(
                    ship.predict, {**spec, "run": str(exported.output_dir), "variant": f"{row['name']} ONNX int8"}
                )
                row["onnx_int8"]["method"] = (exported.int8 or {}).get("method")
            for key in ("torch", "onnx_int8"):
                if key in row:
                    row[key].pop("labels", None)
            rows[str(run_dir)] = row
    reference = rows[str(Path(args.teacher[0]))]["torch"]["samples_per_second"]
    ratios = {
        name: {key: r[key]["samples_per_second"] / reference for key in ("torch", "onnx_int8") if key in r} for name, r in rows.items()
    }
    settings = {"teachers": args.teacher, "students": args.student, "onnx": not args.no_onnx, "max_texts": args.max_texts}
    return harness.record(args, settings=settings, rows=rows, ratios=ratios)


def table(res: dict) -> str:
    from nlp_transfer.reporting.tables import distilled_cell, parameters_cell

    m, rows, ratios = res["machine"], res["rows"], res["ratios"]
    n_test = next(iter(rows.values()))["torch"]["samples"]
    lines = [
        f"{m['cpu']}, {m['cpu_count']} cores, {m['threads']} threads, torch {m['torch']}; measured {res['date']} with "
        f"`{res['command'].strip()}`, each prediction in a fresh process on the {n_test:,} test texts. Ratios: texts/s "
        "against the first teacher's PyTorch path.",
        "",
        "| run | role | parameters | layers | run size (MB) | test accuracy | test macro F1 | agreement with teacher "
        "| teacher accuracy kept | PyTorch texts/s | ratio | ONNX int8 texts/s | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in rows.items():
        onnx = r.get("onnx_int8")
        onnx_cells = f"{onnx['samples_per_second']:.1f} | {ratios[key]['onnx_int8']:.1f}x" if onnx else "- | -"
        lines.append(
            f"| `{r['name']}` | {r['role']} | {parameters_cell(r['parameters'])} | {r['layers'] or '-'} | {r['size_mb']:.1f} | "
            f"{r['accuracy']:.4f} | {r['f1_macro']:.4f} | {distilled_cell(r, 'agreement')} | {distilled_cell(r, 'kept')} | {r['torch']['samples_per_second']:.1f} | "
            f"{ratios[key]['torch']:.1f}x | {onnx_cells} |"
        )
    return "\n".join(lines)
