#!/usr/bin/env python
"""Benchmarks, side by side in one run on the same data and machine; prints ratios.

    python scripts/bench.py cache                      # frozen work done once (issue: transfer modes)
    python scripts/bench.py cache --max-samples 2000   # a quicker slice
    python scripts/bench.py cache --readme docs/results/caches.md   # also regenerate the docs page's block
    python scripts/bench.py adapters                   # top-k LoRA with and without the frozen-prefix cache
    python scripts/bench.py ship                       # ONNX against PyTorch, streamed prediction memory, the server

``cache`` measures, on MiniLM and Rotten Tomatoes with the shipped recipes:

* feature extraction, 5 epochs: the head trained on cached features (cold cache: encoded
  in this run; warm cache: a second run that reads them from disk) against the same head
  trained with the frozen backbone run on every batch of every epoch;
* ``partial`` top-2 and top-1 (``--partial-top``): with the frozen-prefix cache against without it.

``adapters`` measures LoRA on the top K layers with the frozen-prefix cache against without it,
beside LoRA on every layer (time per epoch, the one-off cache build, accuracy).

``ship`` measures, side by side in one run: PyTorch, ONNX fp32 and ONNX int8 prediction of a MiniLM
run (throughput, agreement with PyTorch's labels, accuracy); the peak memory of streamed prediction at
10k, 100k and 1M rows (a tiny model; the whole-input path beside it up to 100k); ``scripts/serve.py``
under a bounded load test on localhost (fixed request count, concurrency 8: throughput, p50/p99 latency).

"fit" is the part the caches change: frozen work + training + validation. "wall" is the
whole ``train()`` call (model load, tokenization, test, saving included). Results go to
a JSON file and, with --readme, into that docs page between ``<!-- results:bench-cache -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(cfg, data, label: str) -> dict:
    from nlp_transfer import train

    print(f"  {label} ...", file=sys.stderr, flush=True)
    r = train(cfg, data=data, progress=False)
    row = {
        "run": label,
        "fit_seconds": r.timing["fit_seconds"],
        "wall_seconds": r.timing["total_seconds"],
        "encode_seconds": r.timing["encode_seconds"],
        "accuracy": r.test["accuracy"],
        "f1_macro": r.test["f1_macro"],
        "cache": r.timing["cache"],
    }
    print(f"    fit {row['fit_seconds']:.1f}s, wall {row['wall_seconds']:.1f}s, test accuracy {row['accuracy']:.4f}", file=sys.stderr)
    return row


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of layer counts such as 2,1")
    return values


def _overrides(args, *extra: str) -> list[str]:
    """Recipe overrides every run of a benchmark shares: --threads, --max-samples, and ``extra``."""
    out = ["output.overwrite=true", *extra]
    if args.threads:
        out.append(f"train.num_threads={args.threads}")
    if args.max_samples:
        out.append(f"data.max_samples={args.max_samples}")
    return out


def bench_cache(args) -> dict:
    from nlp_transfer import RecipeConfig, load_data

    work = Path(tempfile.mkdtemp(prefix="nlp-transfer-bench-"))
    common = _overrides(args, f"transfer.cache_dir={work / 'cache'}")
    recipes = REPO / "recipes" / args.dataset
    fe = RecipeConfig.from_yaml(recipes / "minilm-feature_extraction.yaml", common + [f"train.epochs={args.fe_epochs}"])
    data = load_data(fe.data)
    out = lambda name: f"output.dir={work / name}"  # noqa: E731

    rows = {
        "fe_uncached": _run(fe.replace(out("fe-plain"), "transfer.cache_features=false"), data, "feature extraction, backbone every batch"),
        "fe_cold": _run(fe.replace(out("fe-cold")), data, "feature extraction, cache cold (encode once)"),
        "fe_warm": _run(fe.replace(out("fe-warm")), data, "feature extraction, cache warm (read from disk)"),
    }
    assert rows["fe_warm"]["cache"]["features"]["hits"] == ["train", "validation", "test"], "warm run did not hit the cache"
    ratio = lambda a, b, k="fit_seconds": rows[a][k] / rows[b][k]  # noqa: E731
    ratios = {
        "fe_warm_vs_uncached_fit": ratio("fe_uncached", "fe_warm"),
        "fe_cold_vs_uncached_fit": ratio("fe_uncached", "fe_cold"),
        "fe_warm_vs_uncached_wall": ratio("fe_uncached", "fe_warm", "wall_seconds"),
    }
    for k in args.partial_top:
        partial = RecipeConfig.from_yaml(
            recipes / "minilm-partial.yaml", common + [f"transfer.unfreeze_top={k}", f"train.epochs={args.partial_epochs}"]
        )
        plain, cached = _partial_keys(k)
        rows[plain] = _run(partial.replace(out(f"p{k}-plain"), "transfer.cache_prefix=false"), data, f"partial top-{k}, no prefix cache")
        rows[cached] = _run(partial.replace(out(f"p{k}-cached")), data, f"partial top-{k}, frozen-prefix cache")
        ratios[f"{cached}_vs_uncached_fit"] = ratio(plain, cached)
        ratios[f"{cached}_vs_uncached_wall"] = ratio(plain, cached, "wall_seconds")
    import torch

    return {
        "benchmark": "cache",
        "command": "python scripts/bench.py cache " + " ".join(args.argv),
        "dataset": args.dataset,
        "sizes": data.sizes(),
        "fe_epochs": args.fe_epochs,
        "partial_epochs": args.partial_epochs,
        "partial_top": list(args.partial_top),
        "machine": {
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "rows": rows,
        "ratios": ratios,
        "date": time.strftime("%Y-%m-%d"),
    }


def _partial_keys(k: int) -> tuple[str, str]:
    """Row keys of partial top-k without and with the frozen-prefix cache (top-2 keeps its old names)."""
    return ("partial_uncached", "partial_cached") if k == 2 else (f"partial{k}_uncached", f"partial{k}_cached")


def cache_table(res: dict) -> str:
    r, q = res["rows"], res["ratios"]
    s = res["sizes"]
    tops = res.get("partial_top", [2])
    lines = [
        f"MiniLM on `{res['dataset']}` (train {s['train']:,} / validation {s['validation']:,} / test {s['test']:,}), "
        f"{res['machine']['cpu_count']} CPU cores, bf16 autocast; measured {res['date']} with `{res['command'].strip()}`.",
        "",
        "| run | fit (s) | wall (s) | test accuracy | test macro F1 | speed-up (fit) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    speed = {"fe_warm": q["fe_warm_vs_uncached_fit"], "fe_cold": q["fe_cold_vs_uncached_fit"]}
    order = ["fe_uncached", "fe_cold", "fe_warm"]
    for k in tops:
        plain, cached = _partial_keys(k)
        speed[cached] = q[f"{cached}_vs_uncached_fit"]
        order += [plain, cached]
    for key in order:
        row = r[key]
        x = f"**{speed[key]:.2f}x**" if key in speed else "1.0x"
        lines.append(
            f"| {row['run']} | {row['fit_seconds']:.1f} | {row['wall_seconds']:.1f} | {row['accuracy']:.4f} | {row['f1_macro']:.4f} | {x} |"
        )
    partial = "; ".join(
        f"top-{k} **{q[f'{_partial_keys(k)[1]}_vs_uncached_fit']:.2f}x** (fit; {q[f'{_partial_keys(k)[1]}_vs_uncached_wall']:.2f}x whole call)"
        for k in tops
    )
    lines += [
        "",
        f"Feature extraction, {res['fe_epochs']} epochs: warm cache **{q['fe_warm_vs_uncached_fit']:.1f}x** faster than running the "
        f"backbone every batch (fit; {q['fe_warm_vs_uncached_wall']:.1f}x on the whole call), cold cache "
        f"{q['fe_cold_vs_uncached_fit']:.1f}x. Partial, {res['partial_epochs']} epochs, frozen-prefix cache against none: {partial}.",
    ]
    return "\n".join(lines)


# ---- adapters: top-k LoRA with and without the frozen-prefix cache --------------------------
def bench_adapters(args) -> dict:
    """LoRA on the top K layers of MiniLM (recipes/<dataset>/minilm-lora.yaml), with the layers below
    replayed from the frozen-prefix cache against running them every step; LoRA on every layer beside."""
    from nlp_transfer import RecipeConfig, load_data
    from nlp_transfer.utils.environment import cpu_model

    work = Path(tempfile.mkdtemp(prefix="nlp-transfer-bench-"))
    common = _overrides(args, f"train.epochs={args.epochs}")
    lora = RecipeConfig.from_yaml(REPO / "recipes" / args.dataset / "minilm-lora.yaml", common)
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
        print(f"  {label} ...", file=sys.stderr, flush=True)
        from nlp_transfer import train

        r = train(cfg, data=data, progress=False)
        epochs = [e["seconds"] for e in r.history]
        rows[key] = {
            "run": label,
            "epoch_seconds": sum(epochs) / len(epochs),
            "encode_seconds": r.timing["encode_seconds"],
            "fit_seconds": r.timing["fit_seconds"],
            "wall_seconds": r.timing["total_seconds"],
            "trainable": r.parameters["trainable"],
            "accuracy": r.test["accuracy"],
            "f1_macro": r.test["f1_macro"],
        }
        print(f"    {rows[key]['epoch_seconds']:.1f}s an epoch, test accuracy {r.test['accuracy']:.4f}", file=sys.stderr)
    import torch

    plain, cached = rows["top_uncached"], rows["top_cached"]
    return {
        "benchmark": "adapters",
        "command": "python scripts/bench.py adapters " + " ".join(args.argv),
        "dataset": args.dataset,
        "sizes": data.sizes(),
        "epochs": args.epochs,
        "top": args.top,
        "cpu": cpu_model() or "unknown CPU",
        "machine": {"cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "rows": rows,
        "ratios": {
            "epoch": plain["epoch_seconds"] / cached["epoch_seconds"],
            "fit": plain["fit_seconds"] / cached["fit_seconds"],
            "wall": plain["wall_seconds"] / cached["wall_seconds"],
        },
        "date": time.strftime("%Y-%m-%d"),
    }


def adapters_table(res: dict) -> str:
    r, q, s = res["rows"], res["ratios"], res["sizes"]
    lines = [
        f"MiniLM LoRA (`recipes/{res['dataset']}/minilm-lora.yaml`, {res['epochs']} epochs) on `{res['dataset']}` (train "
        f"{s['train']:,} / validation {s['validation']:,} / test {s['test']:,}), {res['cpu']}, {res['machine']['cpu_count']} "
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


# ---- speed: against transformers' Trainer and pipeline ---------------------------------
def _speed_data(spec: dict):
    """The Rotten Tomatoes split of the shipped recipes; the first ``train_samples`` training examples."""
    from nlp_transfer import RecipeConfig, load_data

    data = load_data(RecipeConfig.from_yaml(REPO / "recipes" / "rotten_tomatoes" / "minilm-full.yaml").data)
    data.splits["train"] = data.splits["train"].select(range(min(spec["train_samples"], len(data.splits["train"]))))
    return data


def _model_flops(config, lengths, epochs: int, num_labels: int) -> float:
    """Training FLOPs a BERT classifier needs on texts of ``lengths`` tokens (6 per matmul
    weight per token for forward and backward, 12 * hidden per query-key pair for attention
    scores and values), the same for every implementation. Its logits read only the first
    token of the last layer, so that layer needs keys and values for every token but its
    query, attention output and feed-forward block for the first token alone; the pooler and
    classifier run once per text."""
    import numpy as np

    d, L, ff = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    layer = 4 * d * d + 2 * d * ff
    n = np.asarray(lengths, dtype=np.float64)
    lower = (L - 1) * (6 * layer * n.sum() + 12 * d * (n**2).sum())
    last = 6 * 2 * d * d * n.sum() + 6 * (layer - 2 * d * d) * len(n) + 12 * d * n.sum()
    head = 6 * (d * d + d * num_labels) * len(n)
    return float(epochs * (lower + last + head))


def _peak_rss_mb() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:  # this process's own high-water mark: ru_maxrss survives exec, so a child reports its parent's peak if larger
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_peak(spec: dict) -> dict:
    """Measured matrix-multiply peak (GFLOP/s) in fp32 and bf16: best of square sizes."""
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        best = 0.0
        for n in (512, 1024, 2048):
            a, b = torch.randn(n, n, dtype=dtype, device=dev), torch.randn(n, n, dtype=dtype, device=dev)
            reps = max(3, int(2e10 / (2 * n**3)))
            torch.mm(a, b)
            if dev == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b)
            if dev == "cuda":
                torch.cuda.synchronize()
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
        out[f"{name}_gflops"] = round(best, 1)
    return out


def _child_trainer(spec: dict) -> dict:
    """transformers.Trainer on AutoModelForSequenceClassification: defaults, best settings, frozen backbone."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    from nlp_transfer.models.catalog import resolve_model

    variant, data = spec["variant"], _speed_data(spec)
    path = str(resolve_model("minilm"))
    tok = AutoTokenizer.from_pretrained(path)
    labels = data.labels
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)}
    )
    frozen = variant == "frozen"
    if frozen:
        for p in model.base_model.parameters():
            p.requires_grad_(False)
    enc = lambda ds: ds.map(
        lambda b: tok(b["text"], truncation=True, max_length=spec["max_length"]),
        batched=True,  # noqa: E731
        remove_columns=["text"],
    )
    train_ds, test_ds = enc(data.splits["train"]), enc(data.splits["test"])
    epochs = spec["fe_epochs"] if frozen else spec["epochs"]
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench-trainer-"),
        per_device_train_batch_size=spec["batch_size"],
        per_device_eval_batch_size=spec["batch_size"],
        num_train_epochs=epochs,
        learning_rate=spec["fe_lr"] if frozen else spec["lr"],
        seed=spec["seed"],
        bf16=variant == "best",
        train_sampling_strategy="group_by_length" if variant == "best" else "random",
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, processing_class=tok)
    m = trainer.train().metrics
    pred = trainer.predict(test_ds)
    # label_ids, not test_ds order: with group_by_length Trainer also length-groups (reorders) prediction batches
    acc = float((pred.predictions.argmax(-1) == np.asarray(pred.label_ids)).mean())
    lengths = [len(x) for x in train_ds["input_ids"]]
    return {
        "seconds": m["train_runtime"],
        "samples": len(lengths) * epochs,
        "tokens": sum(lengths) * epochs,
        "accuracy": acc,
        "peak_mb": _peak_rss_mb(),
        "precision": "bf16" if variant == "best" else "fp32",
        "flops": None if frozen else _model_flops(model.config, lengths, epochs, len(labels)),
    }


def _child_ours(spec: dict) -> dict:
    """nlp_transfer.train with the shipped recipe, the Trainer runs' hyperparameters."""
    from nlp_transfer import RecipeConfig, train

    variant, data = spec["variant"], _speed_data(spec)
    fe = variant == "fe"
    recipe = REPO / "recipes" / "rotten_tomatoes" / ("minilm-feature_extraction.yaml" if fe else "minilm-full.yaml")
    cfg = RecipeConfig.from_yaml(
        recipe,
        [
            f"output.dir={spec['out']}",
            "output.overwrite=true",
            "model.pooling=auto",
            "model.head_dropout=0.1",
            f"model.max_length={spec['max_length']}",
            f"train.batch_size={spec['batch_size']}",
            f"train.seed={spec['seed']}",
            f"train.epochs={spec['fe_epochs'] if fe else spec['epochs']}",
            f"train.lr={spec['fe_lr'] if fe else spec['lr']}",
            "train.head_lr=null",
            "train.warmup_ratio=0",
            "train.weight_decay=0",
            "train.max_grad_norm=1.0",
            f"transfer.cache_dir={spec['out']}-cache",
            *(["train.num_threads=" + str(spec["threads"])] if spec["threads"] else []),
        ]
        + spec["overrides"],
    )
    r = train(cfg, data=data, progress=False)
    epochs = cfg.train.epochs
    n = len(data.splits["train"]) * epochs
    row = {"accuracy": r.test["accuracy"], "peak_mb": _peak_rss_mb(), "precision": r.timing.get("precision", cfg.train.mixed_precision)}
    if fe:  # frozen work included: encoding train and validation (once) + head epochs + validation; Trainer's time
        # has no test either, so encoding the test split (for the accuracy column) is left out
        test = r.timing["cache"]["features"]["split_seconds"].get("test", 0.0)
        return {**row, "seconds": r.timing["fit_seconds"] - test, "samples": n, "tokens": None, "flops": None}
    from transformers import AutoConfig

    tokens = r.timing["train_tokens_per_second"] * r.timing["train_seconds"]
    lengths = _tokenized_lengths(cfg, data)
    return {
        **row,
        "seconds": r.timing["train_seconds"],
        "samples": n,
        "tokens": tokens,
        "flops": _model_flops(AutoConfig.from_pretrained(spec["out"]), lengths, epochs, len(data.labels)),
    }


def _tokenized_lengths(cfg, data) -> list[int]:
    """Token count of every training text, tokenized as the run tokenized it (nlp_transfer.data.batching.tokenize)."""
    import datasets

    from nlp_transfer.data.batching import tokenize
    from nlp_transfer.models.hub import load_tokenizer, resolve_checkpoint

    tok = load_tokenizer(resolve_checkpoint(cfg.model.name_or_path))
    return tokenize(datasets.DatasetDict(train=data.splits["train"]), tok, cfg.model.max_length)["train"]["length"]


def _child_predict(spec: dict) -> dict:
    """Batch prediction on the test texts: transformers.pipeline against load_run, same batch size."""
    import numpy as np
    import torch

    data = _speed_data(spec)
    texts = list(data.splits["test"]["text"])
    bs = spec["batch_size"]
    if spec["variant"] == "pipeline":
        from transformers import pipeline

        pipe = pipeline("text-classification", model=spec["run"], device=0 if torch.cuda.is_available() else -1, batch_size=bs)
        pipe(texts[:bs])  # warm-up
        t0 = time.perf_counter()
        labels = [o["label"] for o in pipe(texts, truncation=True, max_length=spec["max_length"])]
    else:
        from nlp_transfer import load_run

        pred = load_run(spec["run"])
        pred.predict(texts[:bs], batch_size=bs)
        t0 = time.perf_counter()
        labels = list(pred.predict(texts, batch_size=bs))
    seconds = time.perf_counter() - t0
    truth = [data.labels[i] for i in data.splits["test"]["label"]]
    return {
        "seconds": seconds,
        "samples": len(texts),
        "tokens": None,
        "flops": None,
        "peak_mb": _peak_rss_mb(),
        "accuracy": float(np.mean(np.asarray(labels) == np.asarray(truth))),
        "labels": labels,
    }


CHILDREN = {"peak": _child_peak, "trainer": _child_trainer, "ours": _child_ours, "predict": _child_predict}


def _child(kind: str, spec: dict) -> dict:
    """One measurement in a fresh process (its own threads, precision state and peak memory)."""
    import subprocess

    print(f"  {kind} {spec.get('variant', '')} ...", file=sys.stderr, flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if spec["threads"]:
        env["OMP_NUM_THREADS"] = str(spec["threads"])
    p = subprocess.run([sys.executable, __file__, "_child", kind, json.dumps(spec)], env=env, capture_output=True, text=True)
    lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode or not lines:
        sys.stderr.write(p.stderr[-3000:])
        raise SystemExit(f"error: benchmark step '{kind} {spec.get('variant', '')}' failed (exit {p.returncode})")
    row = json.loads(lines[-1][len("RESULT ") :])
    if row.get("seconds"):
        row["samples_per_second"] = row["samples"] / row["seconds"]
        row["tokens_per_second"] = row["tokens"] / row["seconds"] if row.get("tokens") else None
    msg = ", ".join(f"{k} {row[k]:.1f}" for k in ("seconds", "samples_per_second") if row.get(k))
    print(f"    {msg}" + (f", accuracy {row['accuracy']:.4f}" if row.get("accuracy") is not None else ""), file=sys.stderr)
    return row


def bench_speed(args) -> dict:
    import torch

    work = Path(tempfile.mkdtemp(prefix="nlp-transfer-speed-"))
    spec = {
        "train_samples": args.train_samples,
        "fe_train_samples": args.fe_train_samples,
        "epochs": args.epochs,
        "fe_epochs": args.fe_epochs,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "lr": args.lr,
        "fe_lr": args.fe_lr,
        "seed": 42,
        "threads": args.threads,
        "overrides": args.override,
    }
    run = str(work / "ours-full")
    rows = {
        "peak": _child("peak", spec),
        "trainer_default": _child("trainer", {**spec, "variant": "default"}),
        "trainer_best": _child("trainer", {**spec, "variant": "best"}),
        "ours_full": _child("ours", {**spec, "variant": "full", "out": run}),
        "trainer_frozen": _child("trainer", {**spec, "variant": "frozen", "train_samples": args.fe_train_samples}),
        "ours_fe": _child("ours", {**spec, "variant": "fe", "out": str(work / "ours-fe"), "train_samples": args.fe_train_samples}),
        "pipeline": _child("predict", {**spec, "variant": "pipeline", "run": run}),
        "ours_predict": _child("predict", {**spec, "variant": "ours", "run": run}),
    }
    a, b = rows["pipeline"].pop("labels"), rows["ours_predict"].pop("labels")
    peak = rows["peak"]
    for key in ("trainer_default", "trainer_best", "ours_full"):
        r = rows[key]
        r["mfu"] = r["flops"] / r["seconds"] / 1e9 / peak["bf16_gflops" if r["precision"] == "bf16" else "fp32_gflops"]
    sps = lambda k: rows[k]["samples_per_second"]  # noqa: E731
    ratios = {
        "full_vs_trainer_default": sps("ours_full") / sps("trainer_default"),
        "full_vs_trainer_best": sps("ours_full") / sps("trainer_best"),
        "fe_vs_trainer_frozen": rows["trainer_frozen"]["seconds"] / rows["ours_fe"]["seconds"],
        "predict_vs_pipeline": sps("ours_predict") / sps("pipeline"),
        "predict_agreement": sum(x == y for x, y in zip(a, b)) / len(a),
    }
    return {
        "benchmark": "speed",
        "command": "python scripts/bench.py speed " + " ".join(args.argv),
        "settings": {k: v for k, v in spec.items() if k != "overrides"} | {"overrides": args.override},
        "machine": {
            "cpu_count": os.cpu_count(),
            "threads": args.threads or torch.get_num_threads(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "rows": rows,
        "ratios": ratios,
        "date": time.strftime("%Y-%m-%d"),
    }


def speed_table(res: dict) -> str:
    r, q, s = res["rows"], res["ratios"], res["settings"]
    m = res["machine"]
    where = m["cuda"] or f"{m['cpu_count']} CPU cores, {m['threads']} threads"
    lines = [
        f"MiniLM-L6 on Rotten Tomatoes, batch {s['batch_size']}, max length {s['max_length']}: full fine-tuning "
        f"{s['epochs']} epoch(s) on {s['train_samples']:,} training texts, feature extraction {s['fe_epochs']} epochs on "
        f"{s.get('fe_train_samples', s['train_samples']):,}; "
        f"{where}; same model (BERT pooler + linear head), data and hyperparameters on both sides. Measured {res['date']} "
        f"with `{res['command'].strip()}`.",
        "",
        "| run | precision | samples/s | tokens/s | time (s) | peak memory (MB) | MFU | test accuracy | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
    names = {
        "trainer_default": ("Trainer, defaults", None),
        "trainer_best": ("Trainer, bf16 + length grouping", None),
        "ours_full": (
            "**nlp-transfer full fine-tune**",
            f"**{q['full_vs_trainer_default']:.2f}x** default, **{q['full_vs_trainer_best']:.2f}x** best",
        ),
        "trainer_frozen": ("Trainer, backbone frozen", None),
        "ours_fe": ("**nlp-transfer feature extraction** (encode once)", f"**{q['fe_vs_trainer_frozen']:.1f}x**"),
        "pipeline": ('pipeline("text-classification")', None),
        "ours_predict": ("**nlp-transfer load_run().predict**", f"**{q['predict_vs_pipeline']:.2f}x**"),
    }
    for key, (name, ratio) in names.items():
        row = r[key]
        lines.append(
            f"| {name} | {row.get('precision', 'fp32' if key == 'pipeline' else 'bf16')} | {fmt(row.get('samples_per_second'), '.1f')} | "
            f"{fmt(row.get('tokens_per_second'), ',.0f')} | {row['seconds']:.1f} | {row['peak_mb']:,.0f} | "
            f"{fmt(row.get('mfu') and 100 * row['mfu'], '.1f')}{'%' if row.get('mfu') else ''} | {fmt(row.get('accuracy'), '.4f')} | {ratio or ''} |"
        )
    p = r["peak"]
    lines += [
        "",
        f"Matrix-multiply peak measured in the same run: {p['bf16_gflops']:,.0f} GFLOP/s bf16, {p['fp32_gflops']:,.0f} GFLOP/s fp32 "
        "(MFU = training model FLOPs per second over the peak in the run's precision). Feature extraction time includes "
        "encoding the training and validation texts once (not the test texts: Trainer's time has no test either). "
        f"Prediction on the {r['pipeline']['samples']:,} test texts gives the same label on "
        f"{100 * q['predict_agreement']:.2f}% of them.",
    ]
    return "\n".join(lines)


# ---- ship: ONNX against PyTorch, streamed prediction memory, the HTTP server under load ----------------
def _ship_run(work: Path, spec: dict) -> str:
    """A MiniLM run to ship: a Rotten Tomatoes recipe (default full fine-tuning) trained on a slice."""
    if spec.get("run"):
        return spec["run"]
    from nlp_transfer import RecipeConfig, train

    out = work / f"rt-{spec['recipe']}"
    epochs = [f"train.epochs={spec['epochs']}"] if spec["recipe"] != "minilm-logreg" else []  # logreg: fitted once
    cfg = RecipeConfig.from_yaml(
        REPO / "recipes" / "rotten_tomatoes" / f"{spec['recipe']}.yaml",
        [f"data.max_samples={spec['max_samples']}", *epochs, f"output.dir={out}", "output.overwrite=true"],
    )
    print(f"  training the MiniLM run to ship ({spec['recipe']}) ...", file=sys.stderr, flush=True)
    train(cfg, progress=False)
    return str(out)


def _ship_texts(run: str) -> tuple[list[str], list[str]]:
    """The run's own test split (texts, labels), as training split it."""
    from nlp_transfer import RecipeConfig, load_data

    data = load_data(RecipeConfig.from_yaml(Path(run) / "recipe.yaml").data)
    test = data.splits["test"]
    return list(test["text"]), [data.labels[i] for i in test["label"]]


def _child_ship_predict(spec: dict) -> dict:
    """load_run(run).predict on the test texts: PyTorch (fp32 or the run's bf16) or an ONNX export."""
    from nlp_transfer import load_run

    texts, truth = _ship_texts(spec["source_run"])
    pred = load_run(spec["run"], device="cpu", precision=spec.get("precision"))
    pred.predict(texts[:64])  # warm-up
    t0 = time.perf_counter()
    labels = list(pred.predict(texts))
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "samples": len(texts),
        "peak_mb": _peak_rss_mb(),
        "labels": labels,
        "accuracy": sum(a == b for a, b in zip(labels, truth)) / len(truth),
        "size_mb": sum(f.stat().st_size for f in Path(spec["run"]).iterdir() if f.suffix in (".onnx", ".safetensors")) / 1e6,
    }


def _child_stream(spec: dict) -> dict:
    """Prediction of a CSV of ``rows`` rows into a CSV: streamed (predict.py's path) or all in memory (the old path)."""
    out = Path(spec["input"]).with_suffix(f".{spec['variant']}.out.csv")
    t0 = time.perf_counter()
    if spec["variant"] == "stream":
        from nlp_transfer.cli import predict_main

        predict_main([spec["run"], spec["input"], "-o", str(out), "--no-progress", "--chunk-size", str(spec["chunk_size"])])
    else:
        from nlp_transfer import load_run
        from nlp_transfer.data.reader import read_inputs
        from nlp_transfer.inference.textio import prediction_rows, write_predictions

        inputs = read_inputs(spec["input"])
        pred = load_run(spec["run"])
        write_predictions(prediction_rows(inputs, pred.predict(inputs.texts)), pred.labels, str(out))
    seconds = time.perf_counter() - t0
    out.unlink()
    return {"seconds": seconds, "samples": spec["rows"], "peak_mb": _peak_rss_mb()}


CHILDREN.update({"ship_predict": _child_ship_predict, "stream": _child_stream})


def _tiny_run(work: Path) -> str:
    """A random 2-layer, 32-wide BERT run with a word-level vocabulary: the streaming memory bench's model (MiniLM would
    take hours for 1M rows on 2 cores; memory is about the input and output, which a tiny model leaves visible)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from nlp_transfer import RecipeConfig
    from nlp_transfer.recipes import build_classifier

    d = work / "tiny-bert"
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS]) + "\n")
    tok = BertTokenizerFast.from_pretrained(str(d), do_lower_case=True, model_max_length=64)
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=5 + len(_WORDS),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ).save_pretrained(d)
    tok.save_pretrained(d)
    cfg = RecipeConfig.from_dict(
        {"model": {"name_or_path": str(d), "pooling": "mean", "max_length": 32}, "data": {"source": None, "train_file": "unused.csv"}}
    )
    model, tok = build_classifier(cfg, ["neg", "pos"])
    run = work / "tiny-run"
    model.save_pretrained(run, tok, precision="no", eval_batch_size=64, name="tiny")
    return str(run)


_WORDS = (
    "good great awful dull film story plot actor scene music cast very quite really the a an this that and but with "
    "of in on it its was were is so too just some many one two time hour picture drama comedy thriller role"
).split()


def _write_rows(path: Path, n: int) -> None:
    import random

    rng = random.Random(0)
    with open(path, "w") as f:
        f.write("text\n")
        for _ in range(n):
            f.write(" ".join(rng.choices(_WORDS, k=rng.randint(4, 16))) + "\n")


def _load_test(url: str, texts: list[str], requests: int, concurrency: int, per_request: int) -> dict:
    """``requests`` POST /predict of ``per_request`` texts each, ``concurrency`` at a time: throughput and latencies."""
    import asyncio

    import httpx
    import numpy as np

    async def go():
        sem, latencies = asyncio.Semaphore(concurrency), []
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:

            async def one(i):
                body = {"texts": [texts[(i * per_request + k) % len(texts)] for k in range(per_request)]}
                async with sem:
                    t = time.perf_counter()
                    r = await c.post("/predict", json=body)
                    latencies.append(time.perf_counter() - t)
                    r.raise_for_status()

            await c.post("/predict", json={"texts": texts[:8]})  # warm-up
            before = (await c.get("/metrics")).json()
            t0 = time.perf_counter()
            await asyncio.gather(*[one(i) for i in range(requests)])
            seconds = time.perf_counter() - t0
            after = (await c.get("/metrics")).json()
        return seconds, latencies, after["batches"] - before["batches"]

    seconds, lat, batches = asyncio.run(go())
    ms = np.asarray(lat) * 1000
    return {
        "seconds": seconds,
        "requests": requests,
        "requests_per_second": requests / seconds,
        "texts_per_second": requests * per_request / seconds,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "batches": batches,
        "mean_batch_texts": requests * per_request / max(batches, 1),
    }


def _serve_bench(run: str, texts: list[str], spec: dict) -> dict:
    """scripts/serve.py on ``run`` in its own process, a bounded load test from this one (localhost only)."""
    import subprocess

    import httpx

    port = str(_free_port())
    print(f"  serve {Path(run).name}: {spec['requests']} requests, concurrency {spec['concurrency']} ...", file=sys.stderr, flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if spec.get("threads"):
        env["OMP_NUM_THREADS"] = str(spec["threads"])
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "serve.py"), run, "--port", port, "--log-level", "warning", "--max-texts", "1024"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        if proc.poll() is not None:
            raise SystemExit(f"error: scripts/serve.py {run} did not start: {proc.stderr.read()[-2000:]}")
        row = _load_test(url, texts, spec["requests"], spec["concurrency"], spec["per_request"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(
        f"    {row['requests_per_second']:.1f} requests/s, p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms, "
        f"{row['mean_batch_texts']:.1f} texts per model batch",
        file=sys.stderr,
    )
    return row


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_ship(args) -> dict:
    import torch

    from nlp_transfer.inference.export import export_onnx

    work = Path(tempfile.mkdtemp(prefix="nlp-transfer-ship-"))
    spec = {"max_samples": args.max_samples, "epochs": args.epochs, "threads": args.threads, "run": args.run, "recipe": args.recipe}
    run = _ship_run(work, spec)
    print("  exporting to ONNX (fp32, int8) ...", file=sys.stderr, flush=True)
    fp32 = str(export_onnx(run, work / "onnx-fp32").output_dir)
    int8 = str(export_onnx(run, work / "onnx-int8", quantize="int8").output_dir)
    base = {**spec, "source_run": run}
    rows = {
        "torch_fp32": _child("ship_predict", {**base, "variant": "torch fp32", "run": run, "precision": "no"}),
        "torch_run": _child("ship_predict", {**base, "variant": "torch (run's precision)", "run": run}),
        "onnx_fp32": _child("ship_predict", {**base, "variant": "onnx fp32", "run": fp32}),
        "onnx_int8": _child("ship_predict", {**base, "variant": "onnx int8", "run": int8}),
    }
    ref = rows["torch_fp32"]["labels"]
    for r in rows.values():
        r["agreement"] = sum(a == b for a, b in zip(r.pop("labels"), ref)) / len(ref)
    tiny = _tiny_run(work)
    stream = {}
    for n in args.stream_rows:
        path = work / f"rows-{n}.csv"
        _write_rows(path, n)
        stream[f"stream_{n}"] = _child(
            "stream", {**spec, "variant": "stream", "run": tiny, "input": str(path), "rows": n, "chunk_size": args.chunk_size}
        )
        if n <= args.in_memory_max:
            stream[f"memory_{n}"] = _child("stream", {**spec, "variant": "memory", "run": tiny, "input": str(path), "rows": n})
        path.unlink()
    if args.minilm_stream_rows:
        n = args.minilm_stream_rows
        path = work / f"minilm-rows-{n}.csv"
        _write_rows(path, n)
        stream[f"minilm_stream_{n}"] = _child(
            "stream", {**spec, "variant": "stream", "run": run, "input": str(path), "rows": n, "chunk_size": args.chunk_size}
        )
    texts, _ = _ship_texts(run)
    load = {"requests": args.requests, "concurrency": args.concurrency, "per_request": args.texts_per_request, "threads": args.threads}
    serve = {"torch": _serve_bench(run, texts, load), "onnx_int8": _serve_bench(int8, texts, load)}
    peaks = [stream[f"stream_{n}"]["peak_mb"] for n in args.stream_rows]
    return {
        "benchmark": "ship",
        "command": "python scripts/bench.py ship " + " ".join(args.argv),
        "settings": {
            "max_samples": args.max_samples,
            "epochs": args.epochs,
            "recipe": args.recipe,
            "chunk_size": args.chunk_size,
            "stream_rows": args.stream_rows,
            **{k: v for k, v in load.items() if k != "threads"},
        },
        "machine": {
            "cpu": _cpu_name(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads or torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "rows": rows,
        "stream": stream,
        "serve": serve,
        "ratios": {
            "onnx_fp32_vs_torch": rows["onnx_fp32"]["samples_per_second"] / rows["torch_fp32"]["samples_per_second"],
            "onnx_int8_vs_torch": rows["onnx_int8"]["samples_per_second"] / rows["torch_fp32"]["samples_per_second"],
            "stream_peak_spread": max(peaks) / min(peaks) - 1,
        },
        "date": time.strftime("%Y-%m-%d"),
    }


def _cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.processor() or "unknown CPU"


def ship_table(res: dict) -> str:
    r, st, sv, q, m, s = res["rows"], res["stream"], res["serve"], res["ratios"], res["machine"], res["settings"]
    n_test = r["torch_fp32"]["samples"]
    trained = "" if s.get("recipe") == "minilm-logreg" else f", {s.get('epochs', 2)} epochs"
    lines = [
        f"{m['cpu']}, {m['cpu_count']} cores, {m['threads']} threads, torch {m['torch']}; measured {res['date']} with "
        f"`{res['command'].strip()}`, each prediction row in a fresh process. MiniLM-L6 run: "
        f"recipes/rotten_tomatoes/{s.get('recipe', 'minilm-full')}.yaml on data.max_samples={s['max_samples']}"
        f"{trained}, predicting its {n_test:,} test texts.",
        "",
        "| backend | texts/s | ratio | agreement with PyTorch fp32 labels | test accuracy | model file (MB) | peak memory (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = {
        "torch_fp32": "PyTorch fp32 (`load_run`)",
        "torch_run": "PyTorch, the run's precision (bf16 autocast)",
        "onnx_fp32": "**ONNX fp32** (onnxruntime)",
        "onnx_int8": "**ONNX int8** (dynamic quantization)",
    }
    base = r["torch_fp32"]["samples_per_second"]
    for key, name in names.items():
        row = r[key]
        lines.append(
            f"| {name} | {row['samples_per_second']:.1f} | {row['samples_per_second'] / base:.2f}x | "
            f"{100 * row['agreement']:.2f}% | {row['accuracy']:.4f} | {row['size_mb']:.0f} | {row['peak_mb']:,.0f} |"
        )
    lines += [
        "",
        f"Streamed prediction (`scripts/predict.py IN.csv -o OUT.csv --chunk-size {s['chunk_size']}`) against the "
        "whole input in memory (`read_inputs` + `predict` + `write_predictions`, the path before streaming); a tiny "
        "random 2-layer BERT (hidden 32) so that a million rows fit in minutes on 2 cores: peak memory is the input, "
        "output and framework, not the model.",
        "",
        "| rows | model | streamed: peak memory (MB) | streamed: rows/s | in memory: peak memory (MB) | in memory: rows/s |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for key, row in st.items():
        if key.startswith("memory_"):
            continue
        n = row["samples"]
        mem = st.get(f"memory_{n}") if not key.startswith("minilm") else None
        model = "MiniLM-L6 (the run above)" if key.startswith("minilm") else "tiny BERT"
        lines.append(
            f"| {n:,} | {model} | {row['peak_mb']:,.0f} | {row['samples_per_second']:,.0f} | "
            f"{'' if mem is None else format(mem['peak_mb'], ',.0f')} | {'' if mem is None else format(mem['samples_per_second'], ',.0f')} |"
        )
    lines += [
        "",
        f"Streamed peak memory across {', '.join(f'{n:,}' for n in s['stream_rows'])} rows (tiny model) varies by "
        f"{100 * q['stream_peak_spread']:.1f}%.",
        "",
        f"`scripts/serve.py` under a bounded load test on localhost: {s['requests']} requests of {s['per_request']} "
        f"text(s), {s['concurrency']} at a time (httpx client in the bench process, server in its own; both share the cores).",
        "",
        "| served run | requests/s | texts/s | p50 latency (ms) | p99 latency (ms) | texts per model batch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, name in (("torch", "MiniLM run, PyTorch"), ("onnx_int8", "MiniLM run, ONNX int8")):
        row = sv[key]
        lines.append(
            f"| {name} | {row['requests_per_second']:.1f} | {row['texts_per_second']:.1f} | {row['p50_ms']:.0f} | "
            f"{row['p99_ms']:.0f} | {row['mean_batch_texts']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if argv[:1] == ["_child"]:  # one measurement of `speed`, in its own process
        row = CHILDREN[argv[1]](json.loads(argv[2]))
        print("RESULT " + json.dumps(row))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="bench", required=True)
    c = sub.add_parser("cache", help="feature cache and frozen-prefix cache against the uncached paths")
    c.add_argument("--dataset", default="rotten_tomatoes", help="recipes/<dataset>/minilm-{feature_extraction,partial}.yaml")
    c.add_argument("--max-samples", type=int, default=None, help="use at most this many examples per split")
    c.add_argument("--fe-epochs", type=int, default=5, help="feature-extraction epochs on both sides (default 5)")
    c.add_argument("--partial-epochs", type=int, default=3, help="partial-unfreezing epochs on both sides (default 3)")
    c.add_argument(
        "--partial-top",
        type=_int_list,
        default=[2, 1],
        metavar="K[,K...]",
        help="partial runs, each with and without the frozen-prefix cache: top-K layers trained (default 2,1)",
    )
    c.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    c.add_argument("--out", default="results/bench_cache.json", help="JSON results file")
    c.add_argument("--readme", default=None, help="docs page to update between <!-- results:bench-cache --> markers (docs/results/...)")
    a = sub.add_parser("adapters", help="top-k LoRA with the frozen-prefix cache against without it, beside LoRA on every layer")
    a.add_argument("--dataset", default="rotten_tomatoes", help="recipes/<dataset>/minilm-lora.yaml")
    a.add_argument("--top", type=int, default=2, help="adapted top layers of the cached/uncached pair (default 2)")
    a.add_argument("--epochs", type=int, default=2, help="epochs of every run (default 2)")
    a.add_argument("--max-samples", type=int, default=None, help="use at most this many examples per split")
    a.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    a.add_argument("--out", default="results/bench_adapters.json", help="JSON results file")
    a.add_argument("--readme", default=None, help="docs page to update between <!-- results:bench-adapters --> markers (docs/results/...)")
    s = sub.add_parser("speed", help="training and prediction throughput against transformers' Trainer and pipeline")
    s.add_argument("--train-samples", type=int, default=2560, help="training texts (default 2560: 80 steps of 32)")
    s.add_argument("--epochs", type=int, default=1, help="full fine-tuning epochs on both sides (default 1)")
    s.add_argument("--fe-epochs", type=int, default=5, help="feature extraction (frozen backbone) epochs (default 5)")
    s.add_argument(
        "--fe-train-samples",
        type=int,
        default=5120,
        help="training texts of the feature-extraction pair (default 5120; encoding the validation texts is a "
        "fixed cost of ours, so a small slice understates the cache)",
    )
    s.add_argument("--batch-size", type=int, default=32, help="training and prediction batch size (default 32)")
    s.add_argument("--max-length", type=int, default=128, help="longest tokenized input (default 128)")
    s.add_argument("--lr", type=float, default=5e-5, help="full fine-tuning learning rate, both sides (default 5e-5)")
    s.add_argument("--fe-lr", type=float, default=1e-2, help="head learning rate with the backbone frozen (default 1e-2)")
    s.add_argument("--threads", type=int, default=None, help="CPU threads per run (default: all cores)")
    s.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra recipe override for the nlp-transfer runs (repeatable), e.g. train.fast_kernels=false",
    )
    s.add_argument("--out", default="results/bench_speed.json", help="JSON results file")
    s.add_argument("--readme", default=None, help="docs page to update between <!-- results:bench-speed --> markers (docs/results/...)")
    h = sub.add_parser("ship", help="ONNX fp32/int8 against PyTorch, streamed prediction memory, the HTTP server under load")
    h.add_argument("--run", help="MiniLM run to ship (default: train recipes/rotten_tomatoes/minilm-full.yaml on a slice)")
    h.add_argument("--max-samples", type=int, default=3000, help="data.max_samples of that training (default 3000)")
    h.add_argument("--epochs", type=int, default=2, help="train.epochs of that training (default 2)")
    h.add_argument(
        "--recipe",
        default="minilm-full",
        help="recipes/rotten_tomatoes/RECIPE.yaml to train (default minilm-full; "
        "minilm-logreg: frozen features + logistic regression, much quicker on a busy CPU)",
    )
    h.add_argument(
        "--stream-rows",
        type=_int_list,
        default=[10_000, 100_000, 1_000_000],
        metavar="N[,N...]",
        help="rows of the streamed-prediction memory runs (default 10000,100000,1000000)",
    )
    h.add_argument("--in-memory-max", type=int, default=100_000, help="largest input also predicted all in memory (default 100000)")
    h.add_argument("--minilm-stream-rows", type=int, default=10_000, help="a streamed run of the MiniLM run too (0: none)")
    h.add_argument("--chunk-size", type=int, default=10_000, help="predict.py --chunk-size (default 10000)")
    h.add_argument("--requests", type=int, default=400, help="requests of the server load test (default 400)")
    h.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    h.add_argument("--texts-per-request", type=int, default=1, help="texts per request (default 1)")
    h.add_argument("--threads", type=int, default=None, help="CPU threads per run (default: all cores)")
    h.add_argument("--out", default="results/bench_ship.json", help="JSON results file")
    h.add_argument("--readme", default=None, help="docs page to update between <!-- results:bench-ship --> markers (docs/results/...)")
    args = p.parse_args(argv)
    args.argv = argv[1:]
    from nlp_transfer.utils.logs import setup_logging as _setup_logging

    _setup_logging()
    if args.bench == "cache":
        res, table, section = bench_cache(args), None, "bench-cache"
        table = cache_table(res)
    elif args.bench == "adapters":
        res, section = bench_adapters(args), "bench-adapters"
        table = adapters_table(res)
    elif args.bench == "ship":
        res, section = bench_ship(args), "bench-ship"
        table = ship_table(res)
    else:
        res, section = bench_speed(args), "bench-speed"
        table = speed_table(res)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    Path(args.out).with_suffix(".md").write_text(table + "\n")
    if args.readme:
        from nlp_transfer.reporting.tables import update_readme

        update_readme(args.readme, section, table)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from nlp_transfer.cli import run_cli

    sys.exit(run_cli(lambda a: main(a), sys.argv[1:]))
