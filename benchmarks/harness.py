"""What every benchmark shares: the machine it ran on (CPU model, threads, date), the measured bf16 and fp32
matrix-multiply peak, timing, peak memory, ratios against a reference measured in the same run, one
measurement in a fresh process, and the results files (JSON + Markdown, with the command that produced them,
and optionally the ``<!-- results:SECTION -->`` block of any Markdown file)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULT = "RESULT "  # the line a fresh-process measurement prints its row on


def say(message: str) -> None:
    """Progress on standard error (standard output carries the table)."""
    print(message, file=sys.stderr, flush=True)


def recipe(dataset: str, name: str) -> Path:
    """recipes/<dataset>/<name>.yaml of this checkout."""
    return REPO / "recipes" / dataset / f"{name}.yaml"


# ---- the machine ---------------------------------------------------------------------------------
def machine(threads: int | None = None) -> dict:
    """CPU model, cores, threads (``threads`` where set, else torch's), torch version, CUDA device."""
    import platform

    import torch

    from nlp_transfer.utils.environment import cpu_model

    return {
        "cpu": cpu_model() or platform.processor() or "unknown CPU",
        "cpu_count": os.cpu_count(),
        "threads": threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def matmul_peak(spec: dict | None = None) -> dict:
    """Measured matrix-multiply peak (GFLOP/s) in fp32 and bf16: best of square sizes ``spec["peak_sizes"]`` (default
    512, 1024, 2048), about ``spec["peak_flops"]`` (default 2e10) floating-point operations each."""
    import torch

    spec = spec or {}
    work = spec.get("peak_flops", 2e10)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if dev == "cuda" else lambda: None
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        best = 0.0
        for n in spec.get("peak_sizes", (512, 1024, 2048)):
            a, b = torch.randn(n, n, dtype=dtype, device=dev), torch.randn(n, n, dtype=dtype, device=dev)
            reps = max(3, int(work / (2 * n**3)))
            torch.mm(a, b)
            sync()
            with Stopwatch() as t:
                for _ in range(reps):
                    torch.mm(a, b)
                sync()
            best = max(best, 2 * n**3 * reps / t.seconds / 1e9)
        out[f"{name}_gflops"] = round(best, 1)
    return out


def mfu(row: dict, peak: dict) -> float:
    """Model FLOPs utilisation of a training row: its FLOPs per second over the peak in its precision."""
    return row["flops"] / row["seconds"] / 1e9 / peak["bf16_gflops" if row["precision"] == "bf16" else "fp32_gflops"]


# ---- timing, memory, ratios ---------------------------------------------------------------------
class Stopwatch:
    """``with Stopwatch() as t: ...``, then ``t.seconds`` (wall clock, perf_counter)."""

    seconds: float

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start


def peak_mb() -> float:
    """Peak memory of this process so far (MB): CUDA memory allocated on a GPU, else the resident set's high-water mark."""
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:  # this process's own high-water mark: ru_maxrss survives exec, so a child reports its parent's peak if larger
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def speedup(rows: dict, new: str, ref: str, field: str = "seconds") -> float:
    """How many times better row ``new`` is than the reference row ``ref`` of the same run on ``field``: the
    reference over the new value for a time, the new over the reference for a rate (a field ending in per_second)."""
    a, b = rows[new][field], rows[ref][field]
    return a / b if field.endswith("per_second") else b / a


def agreement(labels: list, reference: list) -> float:
    """Share of positions where two label lists agree (accuracy, with the true labels as reference)."""
    return sum(a == b for a, b in zip(labels, reference)) / len(reference)


def timed_predict(predict, texts: list[str], truth: list[str], warmup: int) -> dict:
    """``predict(texts)`` after a warm-up on the first ``warmup`` texts: time, labels, accuracy, peak memory."""
    predict(texts[:warmup])
    with Stopwatch() as t:
        labels = list(predict(texts))
    return {"seconds": t.seconds, "samples": len(texts), "peak_mb": peak_mb(), "labels": labels, "accuracy": agreement(labels, truth)}


def train_row(cfg, data, label: str) -> tuple[dict, object]:
    """``nlp_transfer.train`` in this process: its row (fit and wall time, frozen-work time, test accuracy and
    macro F1) and the training result for what a benchmark adds."""
    from nlp_transfer import train

    say(f"  {label} ...")
    r = train(cfg, data=data, progress=False)
    row = {
        "run": label,
        "fit_seconds": r.timing["fit_seconds"],
        "wall_seconds": r.timing["total_seconds"],
        "encode_seconds": r.timing["encode_seconds"],
        "accuracy": r.test["accuracy"],
        "f1_macro": r.test["f1_macro"],
    }
    say(f"    fit {row['fit_seconds']:.1f}s, wall {row['wall_seconds']:.1f}s, test accuracy {row['accuracy']:.4f}")
    return row, r


# ---- one measurement in a fresh process ------------------------------------------------------------
def child_env(threads: int | None) -> dict:
    """The environment of a benchmark's subprocess: offline, this checkout importable, ``threads`` OpenMP threads."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_child(fn, spec: dict, label: str | None = None) -> dict:
    """``fn(spec)`` in a fresh process (its own threads, precision state and peak memory): its row, with
    samples_per_second and tokens_per_second where it has seconds."""
    import subprocess

    label = label or f"{fn.__name__.strip('_')} {spec.get('variant', '')}".strip()
    say(f"  {label} ...")
    cmd = [sys.executable, "-m", "benchmarks", "_child", f"{fn.__module__}:{fn.__qualname__}", json.dumps(spec)]
    p = subprocess.run(cmd, env=child_env(spec.get("threads")), capture_output=True, text=True, cwd=REPO)
    lines = [x for x in p.stdout.splitlines() if x.startswith(RESULT)]
    if p.returncode or not lines:
        sys.stderr.write(p.stderr[-3000:])
        raise SystemExit(f"error: benchmark step '{label}' failed (exit {p.returncode})")
    row = json.loads(lines[-1][len(RESULT) :])
    if row.get("seconds"):
        row["samples_per_second"] = row["samples"] / row["seconds"]
        row["tokens_per_second"] = row["tokens"] / row["seconds"] if row.get("tokens") else None
    msg = ", ".join(f"{k} {row[k]:.1f}" for k in ("seconds", "samples_per_second") if row.get(k))
    say(f"    {msg}" + (f", accuracy {row['accuracy']:.4f}" if row.get("accuracy") is not None else ""))
    return row


def child_main(target: str, spec: str) -> None:
    """The subprocess side of :func:`run_child`: ``module:function`` called on the JSON spec, its row printed."""
    import importlib

    module, name = target.split(":")
    print(RESULT + json.dumps(getattr(importlib.import_module(module), name)(json.loads(spec))))


# ---- arguments and results files --------------------------------------------------------------------
def int_list(text: str) -> list[int]:
    """argparse type: a comma-separated list of positive integers such as 2,1."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of layer counts such as 2,1")
    return values


def overrides(args, *extra: str) -> list[str]:
    """Recipe overrides every in-process run of a benchmark shares: --threads, --max-samples, and ``extra``."""
    out = ["output.overwrite=true", *extra]
    if args.threads:
        out.append(f"train.num_threads={args.threads}")
    if args.max_samples:
        out.append(f"data.max_samples={args.max_samples}")
    return out


def add_common_arguments(p: argparse.ArgumentParser, name: str) -> None:
    """--threads, and where the results go: --out (JSON, its .md beside it), --readme and --section."""
    p.add_argument("--threads", type=int, default=None, help="CPU threads (of every run; default: all cores)")
    p.add_argument(
        "--out",
        default=f"results/bench_{name}.json",
        help=f"JSON results file; the table goes beside it as .md (default results/bench_{name}.json)",
    )
    p.add_argument(
        "--readme",
        metavar="MARKDOWN",
        default=None,
        help="a Markdown file (README.md, a docs page) whose <!-- results:SECTION --> ... <!-- /results:SECTION --> block "
        "is replaced by the table (checked before the benchmark starts)",
    )
    p.add_argument("--section", default=f"bench-{name}", help=f"the block's SECTION name (default bench-{name})")


def record(args, **fields) -> dict:
    """A benchmark's results: its name, the command that produced them, ``fields``, the machine (--threads), the date."""
    return {
        "benchmark": args.bench,
        "command": " ".join(["python -m benchmarks", *args.argv]),
        **fields,
        "machine": machine(args.threads),
        "date": time.strftime("%Y-%m-%d"),
    }


def write(res: dict, table: str, out: str | Path, markdown: str | Path | None = None, section: str | None = None) -> None:
    """Print the table; write ``out`` (JSON) and the table beside it (.md); replace the block ``section`` of the
    Markdown file ``markdown`` where given (nlp_transfer.reporting.tables.update_readme)."""
    print(table)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    out.with_suffix(".md").write_text(table + "\n")
    if markdown:
        from nlp_transfer.reporting.tables import update_readme

        update_readme(markdown, section or f"bench-{res['benchmark']}", table)
