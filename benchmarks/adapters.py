"""LoRA on the top K layers with the frozen-prefix cache against without it, beside LoRA on every layer.

    python -m benchmarks adapters                      # MiniLM, recipes/rotten_tomatoes/minilm-lora.yaml, top 2
    python -m benchmarks adapters --top 3 --epochs 1   # other depth, fewer epochs

With the cache, the layers below the adapted ones are run once and replayed; without it they run every
step. Measured side by side in one run: time per epoch, the one-off cache build, fit and whole call,
trained parameters, test accuracy and macro F1.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks import harness

NAME = "adapters"
HELP = "top-k LoRA with the frozen-prefix cache against without it, beside LoRA on every layer"


def add_arguments(p) -> None:
    p.add_argument("--dataset", default="rotten_tomatoes", help="recipes/<dataset>/minilm-lora.yaml")
    p.add_argument("--top", type=int, default=2, help="adapted top layers of the cached/uncached pair (default 2)")
    p.add_argument("--epochs", type=int, default=2, help="epochs of every run (default 2)")
    p.add_argument("--max-samples", type=int, default=None, help="use at most this many examples per split")


def run(args) -> dict:
    """LoRA on the top K layers of MiniLM (recipes/<dataset>/minilm-lora.yaml), with the layers below
    replayed from the frozen-prefix cache against running them every step; LoRA on every layer beside."""
    from nlp_transfer import RecipeConfig, load_data

    work = Path(tempfile.mkdtemp(prefix="nlp-transfer-bench-"))
    lora = RecipeConfig.from_yaml(harness.recipe(args.dataset, "minilm-lora"), harness.overrides(args, f"train.epochs={args.epochs}"))
    data = load_data(lora.data)
    top = f"transfer.peft.layers_to_transform=[{', '.join(str(-i) for i in range(args.top, 0, -1))}]"
    runs = {
        "all_layers": (lora.replace(f"output.dir={work / 'all'}"), "LoRA, every layer"),
        "top_uncached": (
            lora.replace(f"output.dir={work / 'plain'}", top, "transfer.cache_prefix=false"),
            f"LoRA, top {args.top} layers, no prefix cache",
        ),
        "top_cached": (lora.replace(f"output.dir={work / 'cached'}", top), f"LoRA, top {args.top} layers, frozen-prefix cache"),
    }
    rows = {}
    for key, (cfg, label) in runs.items():
        row, r = harness.train_row(cfg, data, label)
        epochs = [e["seconds"] for e in r.history]
        rows[key] = {**row, "epoch_seconds": sum(epochs) / len(epochs), "trainable": r.parameters["trainable"]}
        harness.say(f"    {rows[key]['epoch_seconds']:.1f}s an epoch")
    ratio = lambda field: harness.speedup(rows, "top_cached", "top_uncached", field)
    return harness.record(
        args,
        dataset=args.dataset,
        sizes=data.sizes(),
        epochs=args.epochs,
        top=args.top,
        rows=rows,
        ratios={"epoch": ratio("epoch_seconds"), "fit": ratio("fit_seconds"), "wall": ratio("wall_seconds")},
    )


def table(res: dict) -> str:
    r, q, s, m = res["rows"], res["ratios"], res["sizes"], res["machine"]
    lines = [
        f"MiniLM LoRA (`recipes/{res['dataset']}/minilm-lora.yaml`, {res['epochs']} epochs) on `{res['dataset']}` (train "
        f"{s['train']:,} / validation {s['validation']:,} / test {s['test']:,}), {m.get('cpu') or res.get('cpu')}, {m['cpu_count']} "
        f"cores, bf16 autocast; measured {res['date']} with `{res['command'].strip()}`.",
        "",
        "| run | trained params | time per epoch (s) | cache build (s) | fit (s) | test accuracy | test macro F1 | speed-up (epoch) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in ("all_layers", "top_uncached", "top_cached"):
        row = r[key]
        x = f"**{q['epoch']:.2f}x**" if key == "top_cached" else ("1.0x" if key == "top_uncached" else "")
        lines.append(
            f"| {row['run']} | {row['trainable']:,} | {row['epoch_seconds']:.1f} | {row['encode_seconds']:.1f} | "
            f"{row['fit_seconds']:.1f} | {row['accuracy']:.4f} | {row['f1_macro']:.4f} | {x} |"
        )
    lines += [
        "",
        f"Top-{res['top']} LoRA with the frozen-prefix cache against without: **{q['epoch']:.2f}x** per epoch, "
        f"{q['fit']:.2f}x on the fit (cache build included), {q['wall']:.2f}x on the whole call.",
    ]
    return "\n".join(lines)
