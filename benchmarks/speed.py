"""Side by side with transformers' Trainer and pipeline: throughput, peak memory, MFU, accuracy.

    python -m benchmarks speed                         # MiniLM-L6 on Rotten Tomatoes (a few minutes on CPU)
    python -m benchmarks speed --train-samples 640     # a quicker slice
    python -m benchmarks speed --override train.fast_kernels=false

Full fine-tuning (Trainer with its defaults, Trainer with bf16 and length grouping, nlp-transfer), feature
extraction (Trainer with the backbone frozen against nlp-transfer's encode-once cache) and batch prediction
(pipeline against load_run().predict): the same model (BERT pooler + linear head), data and hyperparameters on
both sides, each measurement in a fresh process. MFU is the training model FLOPs per second over the
matrix-multiply peak measured in the same run, in the run's precision.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks import harness

NAME = "speed"
HELP = "training and prediction throughput against transformers' Trainer and pipeline"


def add_arguments(p) -> None:
    p.add_argument("--train-samples", type=int, default=2560, help="training texts (default 2560: 80 steps of 32)")
    p.add_argument("--epochs", type=int, default=1, help="full fine-tuning epochs on both sides (default 1)")
    p.add_argument("--fe-epochs", type=int, default=5, help="feature extraction (frozen backbone) epochs (default 5)")
    p.add_argument(
        "--fe-train-samples",
        type=int,
        default=5120,
        help="training texts of the feature-extraction pair (default 5120; encoding the validation texts is a "
        "fixed cost of ours, so a small slice understates the cache)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="training and prediction batch size (default 32)")
    p.add_argument("--max-length", type=int, default=128, help="longest tokenized input (default 128)")
    p.add_argument("--lr", type=float, default=5e-5, help="full fine-tuning learning rate, both sides (default 5e-5)")
    p.add_argument("--fe-lr", type=float, default=1e-2, help="head learning rate with the backbone frozen (default 1e-2)")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra recipe override for the nlp-transfer runs (repeatable), e.g. train.fast_kernels=false",
    )


def _data(spec: dict):
    """The Rotten Tomatoes split of the shipped recipes; the first ``train_samples`` training examples."""
    from nlp_transfer import RecipeConfig, load_data

    data = load_data(RecipeConfig.from_yaml(harness.recipe("rotten_tomatoes", "minilm-full")).data)
    data.splits["train"] = data.splits["train"].select(range(min(spec["train_samples"], len(data.splits["train"]))))
    return data


def model_flops(config, lengths, epochs: int, num_labels: int) -> float:
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


def trainer(spec: dict) -> dict:
    """transformers.Trainer on AutoModelForSequenceClassification: defaults, best settings, frozen backbone."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    from nlp_transfer.models.catalog import resolve_model

    variant, data = spec["variant"], _data(spec)
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
    enc = lambda ds: ds.map(lambda b: tok(b["text"], truncation=True, max_length=spec["max_length"]), batched=True, remove_columns=["text"])
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
        "peak_mb": harness.peak_mb(),
        "precision": "bf16" if variant == "best" else "fp32",
        "flops": None if frozen else model_flops(model.config, lengths, epochs, len(labels)),
    }


def ours(spec: dict) -> dict:
    """nlp_transfer.train with the shipped recipe, the Trainer runs' hyperparameters."""
    from nlp_transfer import RecipeConfig, train

    variant, data = spec["variant"], _data(spec)
    fe = variant == "fe"
    cfg = RecipeConfig.from_yaml(
        harness.recipe("rotten_tomatoes", "minilm-feature_extraction" if fe else "minilm-full"),
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
    row = {"accuracy": r.test["accuracy"], "peak_mb": harness.peak_mb(), "precision": r.timing.get("precision", cfg.train.mixed_precision)}
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
        "flops": model_flops(AutoConfig.from_pretrained(spec["out"]), lengths, epochs, len(data.labels)),
    }


def _tokenized_lengths(cfg, data) -> list[int]:
    """Token count of every training text, tokenized as the run tokenized it (nlp_transfer.data.batching.tokenize)."""
    import datasets

    from nlp_transfer.data.batching import tokenize
    from nlp_transfer.models.hub import load_tokenizer, resolve_checkpoint

    tok = load_tokenizer(resolve_checkpoint(cfg.model.name_or_path))
    return tokenize(datasets.DatasetDict(train=data.splits["train"]), tok, cfg.model.max_length)["train"]["length"]


def predict(spec: dict) -> dict:
    """Batch prediction on the test texts: transformers.pipeline against load_run, same batch size."""
    import torch

    data = _data(spec)
    texts, bs = list(data.splits["test"]["text"]), spec["batch_size"]
    truth = [data.labels[i] for i in data.splits["test"]["label"]]
    if spec["variant"] == "pipeline":
        from transformers import pipeline

        pipe = pipeline("text-classification", model=spec["run"], device=0 if torch.cuda.is_available() else -1, batch_size=bs)
        fn = lambda batch: [o["label"] for o in pipe(batch, truncation=True, max_length=spec["max_length"])]
        row = harness.timed_predict(fn, texts, truth, warmup=bs)
    else:
        from nlp_transfer import load_run

        pred = load_run(spec["run"])
        row = harness.timed_predict(lambda batch: pred.predict(batch, batch_size=bs), texts, truth, warmup=bs)
    return {**row, "tokens": None, "flops": None}


def run(args) -> dict:
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
    run_dir = str(work / "ours-full")
    child = harness.run_child
    fe_spec = {**spec, "train_samples": args.fe_train_samples}
    rows = {
        "peak": child(harness.matmul_peak, spec, "matrix-multiply peak"),
        "trainer_default": child(trainer, {**spec, "variant": "default"}),
        "trainer_best": child(trainer, {**spec, "variant": "best"}),
        "ours_full": child(ours, {**spec, "variant": "full", "out": run_dir}),
        "trainer_frozen": child(trainer, {**fe_spec, "variant": "frozen"}),
        "ours_fe": child(ours, {**fe_spec, "variant": "fe", "out": str(work / "ours-fe")}),
        "pipeline": child(predict, {**spec, "variant": "pipeline", "run": run_dir}),
        "ours_predict": child(predict, {**spec, "variant": "ours", "run": run_dir}),
    }
    a, b = rows["pipeline"].pop("labels"), rows["ours_predict"].pop("labels")
    for key in ("trainer_default", "trainer_best", "ours_full"):
        rows[key]["mfu"] = harness.mfu(rows[key], rows["peak"])
    sps = lambda new, ref: harness.speedup(rows, new, ref, "samples_per_second")
    ratios = {
        "full_vs_trainer_default": sps("ours_full", "trainer_default"),
        "full_vs_trainer_best": sps("ours_full", "trainer_best"),
        "fe_vs_trainer_frozen": harness.speedup(rows, "ours_fe", "trainer_frozen", "seconds"),
        "predict_vs_pipeline": sps("ours_predict", "pipeline"),
        "predict_agreement": harness.agreement(b, a),
    }
    return harness.record(
        args,
        settings={k: v for k, v in spec.items() if k != "overrides"} | {"overrides": args.override},
        rows=rows,
        ratios=ratios,
    )


def table(res: dict) -> str:
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
    fmt = lambda v, f: "" if v is None else format(v, f)
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
