"""Shipping, side by side in one run: ONNX against PyTorch, streamed prediction memory, the HTTP server under load.

    python -m benchmarks ship                          # trains a MiniLM run on a slice first
    python -m benchmarks ship --run runs/rt-minilm-full --stream-rows 10000,100000

Measured: PyTorch, ONNX fp32 and ONNX int8 prediction of a MiniLM run (throughput, agreement with PyTorch's
labels, accuracy), each in a fresh process; the peak memory of streamed prediction at 10k, 100k and 1M rows
(a tiny model; the whole-input path beside it up to 100k); ``scripts/serve.py`` under a bounded load test on
localhost (fixed request count, concurrency 8: throughput, p50/p99 latency).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchmarks import harness

NAME = "ship"
HELP = "optimized ONNX fp32 and agreement-checked int8 against PyTorch fp32/bf16, streamed prediction memory, the HTTP server under load"


def add_arguments(p) -> None:
    p.add_argument("--run", help="MiniLM run to ship (default: train recipes/rotten_tomatoes/minilm-full.yaml on a slice)")
    p.add_argument("--max-samples", type=int, default=3000, help="data.max_samples of that training (default 3000)")
    p.add_argument("--epochs", type=int, default=2, help="train.epochs of that training (default 2)")
    p.add_argument(
        "--recipe",
        default="minilm-full",
        help="recipes/rotten_tomatoes/RECIPE.yaml to train (default minilm-full; "
        "minilm-logreg: frozen features + logistic regression, much quicker on a busy CPU)",
    )
    p.add_argument(
        "--stream-rows",
        type=harness.int_list,
        default=[10_000, 100_000, 1_000_000],
        metavar="N[,N...]",
        help="rows of the streamed-prediction memory runs (default 10000,100000,1000000)",
    )
    p.add_argument("--in-memory-max", type=int, default=100_000, help="largest input also predicted all in memory (default 100000)")
    p.add_argument("--minilm-stream-rows", type=int, default=10_000, help="a streamed run of the MiniLM run too (0: none)")
    p.add_argument("--chunk-size", type=int, default=10_000, help="predict.py --chunk-size (default 10000)")
    p.add_argument("--requests", type=int, default=400, help="requests of the server load test (default 400)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument("--texts-per-request", type=int, default=1, help="texts per request (default 1)")


def _ship_run(work: Path, spec: dict) -> str:
    """A MiniLM run to ship: a Rotten Tomatoes recipe (default full fine-tuning) trained on a slice."""
    if spec.get("run"):
        return spec["run"]
    from nlp_transfer import RecipeConfig, train

    out = work / f"rt-{spec['recipe']}"
    epochs = [f"train.epochs={spec['epochs']}"] if spec["recipe"] != "minilm-logreg" else []  # logreg: fitted once
    cfg = RecipeConfig.from_yaml(
        harness.recipe("rotten_tomatoes", spec["recipe"]),
        [f"data.max_samples={spec['max_samples']}", *epochs, f"output.dir={out}", "output.overwrite=true"],
    )
    harness.say(f"  training the MiniLM run to ship ({spec['recipe']}) ...")
    train(cfg, progress=False)
    return str(out)


def _test_texts(run: str) -> tuple[list[str], list[str]]:
    """The run's own test split (texts, labels), as training split it."""
    from nlp_transfer import RecipeConfig, load_data

    data = load_data(RecipeConfig.from_yaml(Path(run) / "recipe.yaml").data)
    test = data.splits["test"]
    return list(test["text"]), [data.labels[i] for i in test["label"]]


def predict(spec: dict) -> dict:
    """load_run(run).predict on the source run's test texts (the first ``max_texts``, where given): PyTorch (fp32
    or the run's bf16) or an ONNX export, after ``warmup`` texts (64)."""
    from nlp_transfer import load_run

    texts, truth = _test_texts(spec["source_run"])
    if spec.get("max_texts"):
        texts, truth = texts[: spec["max_texts"]], truth[: spec["max_texts"]]
    pred = load_run(spec["run"], device="cpu", precision=spec.get("precision"))
    row = harness.timed_predict(pred.predict, texts, truth, warmup=spec.get("warmup", 64))
    size = sum(f.stat().st_size for f in Path(spec["run"]).iterdir() if f.suffix in (".onnx", ".safetensors"))
    return {**row, "size_mb": size / 1e6}


def stream(spec: dict) -> dict:
    """Prediction of a CSV of ``rows`` rows into a CSV: streamed (predict.py's path) or all in memory (the old path)."""
    out = Path(spec["input"]).with_suffix(f".{spec['variant']}.out.csv")
    with harness.Stopwatch() as t:
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
    out.unlink()
    return {"seconds": t.seconds, "samples": spec["rows"], "peak_mb": harness.peak_mb()}


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
    config = BertConfig(
        vocab_size=5 + len(_WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(d)
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


def _stream_rows(args, work: Path, spec: dict, tiny: str, run: str) -> dict:
    """Streamed prediction of n random rows by the tiny model for each n of --stream-rows (all in memory too up to
    --in-memory-max), and of --minilm-stream-rows rows by the MiniLM run."""
    out = {}
    sizes = [("", tiny, n) for n in args.stream_rows] + ([("minilm_", run, args.minilm_stream_rows)] if args.minilm_stream_rows else [])
    for prefix, model, n in sizes:
        path = work / f"{prefix}rows-{n}.csv"
        _write_rows(path, n)
        case = {**spec, "run": model, "input": str(path), "rows": n}
        out[f"{prefix}stream_{n}"] = harness.run_child(stream, {**case, "variant": "stream", "chunk_size": args.chunk_size})
        if not prefix and n <= args.in_memory_max:
            out[f"memory_{n}"] = harness.run_child(stream, {**case, "variant": "memory"})
        path.unlink()
    return out


def _load_test(url: str, texts: list[str], requests: int, concurrency: int, per_request: int) -> dict:
    """``requests`` POST /predict of ``per_request`` texts each, ``concurrency`` at a time: throughput and latencies."""
    import asyncio
    import time

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
            with harness.Stopwatch() as t:
                await asyncio.gather(*[one(i) for i in range(requests)])
            after = (await c.get("/metrics")).json()
        return t.seconds, latencies, after["batches"] - before["batches"]

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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_bench(run: str, texts: list[str], spec: dict) -> dict:
    """scripts/serve.py on ``run`` in its own process, a bounded load test from this one (localhost only)."""
    import subprocess
    import time

    import httpx

    port = str(_free_port())
    harness.say(f"  serve {Path(run).name}: {spec['requests']} requests, concurrency {spec['concurrency']} ...")
    proc = subprocess.Popen(
        [sys.executable, str(harness.REPO / "scripts" / "serve.py"), run, "--port", port, "--log-level", "warning", "--max-texts", "1024"],
        env=harness.child_env(spec.get("threads")),
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
    harness.say(
        f"    {row['requests_per_second']:.1f} requests/s, p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms, "
        f"{row['mean_batch_texts']:.1f} texts per model batch"
    )
    return row


def run(args) -> dict:
    from nlp_transfer.inference.export import export_onnx

    work = Path(tempfile.mkdtemp(prefix="nlp-transfer-ship-"))
    spec = {"max_samples": args.max_samples, "epochs": args.epochs, "threads": args.threads, "run": args.run, "recipe": args.recipe}
    run_dir = _ship_run(work, spec)
    harness.say("  exporting to ONNX (optimized fp32; int8 chosen against 99.5% validation agreement) ...")
    fp32_export = export_onnx(run_dir, work / "onnx-fp32")
    int8_export = export_onnx(run_dir, work / "onnx-int8", quantize="int8", say=harness.say)
    fp32, int8 = str(fp32_export.output_dir), str(int8_export.output_dir)
    base = {**spec, "source_run": run_dir}
    rows = {
        "torch_fp32": harness.run_child(predict, {**base, "variant": "torch fp32", "run": run_dir, "precision": "no"}),
        "torch_run": harness.run_child(predict, {**base, "variant": "torch (run's precision)", "run": run_dir}),
        "onnx_fp32": harness.run_child(predict, {**base, "variant": "onnx fp32", "run": fp32}),
        "onnx_int8": harness.run_child(predict, {**base, "variant": "onnx int8", "run": int8}),
    }
    ref = rows["torch_fp32"]["labels"]
    for r in rows.values():
        r["agreement"] = harness.agreement(r.pop("labels"), ref)
    streamed = _stream_rows(args, work, spec, _tiny_run(work), run_dir)
    texts, _ = _test_texts(run_dir)
    load = {"requests": args.requests, "concurrency": args.concurrency, "per_request": args.texts_per_request, "threads": args.threads}
    serve = {"torch": _serve_bench(run_dir, texts, load), "onnx_int8": _serve_bench(int8, texts, load)}
    peaks = [streamed[f"stream_{n}"]["peak_mb"] for n in args.stream_rows]
    sps = lambda new: harness.speedup(rows, new, "torch_fp32", "samples_per_second")
    settings = {
        "max_samples": args.max_samples,
        "epochs": args.epochs,
        "recipe": args.recipe,
        "chunk_size": args.chunk_size,
        "stream_rows": args.stream_rows,
        **{k: v for k, v in load.items() if k != "threads"},
    }
    return harness.record(
        args,
        settings=settings,
        rows=rows,
        export={"optimizer": fp32_export.optimized, "int8": int8_export.int8},
        stream=streamed,
        serve=serve,
        ratios={
            "onnx_fp32_vs_torch": sps("onnx_fp32"),
            "onnx_int8_vs_torch": sps("onnx_int8"),
            "onnx_int8_vs_torch_run": harness.speedup(rows, "onnx_int8", "torch_run", "samples_per_second"),
            "stream_peak_spread": max(peaks) / min(peaks) - 1,
        },
    )


def table(res: dict) -> str:
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
        "onnx_fp32": "**ONNX fp32**, optimized (fused attention, LayerNorm, GELU)",
        "onnx_int8": "**ONNX int8** (chosen at export, below)",
    }
    for key, name in names.items():
        row = r[key]
        lines.append(
            f"| {name} | {row['samples_per_second']:.1f} | {harness.speedup(r, key, 'torch_fp32', 'samples_per_second'):.2f}x | "
            f"{100 * row['agreement']:.2f}% | {row['accuracy']:.4f} | {row['size_mb']:.0f} | {row['peak_mb']:,.0f} |"
        )
    q8 = (res.get("export") or {}).get("int8")
    if q8:
        lines += [
            "",
            f"int8 chosen at export: {q8['method']} quantization with {len(q8['nodes_excluded'])} node(s) kept in fp32, "
            f"{100 * q8['agreement']:.2f}% label agreement with the fp32 graph on {q8['evaluation_texts']} validation texts "
            f"(target {100 * q8['target']:.1f}%); {q['onnx_int8_vs_torch_run']:.2f}x the PyTorch bf16 path on the test texts. Candidates: "
            + "; ".join(
                f"{c['method']}, {c['excluded']} in fp32: "
                + (f"{100 * c['agreement']:.2f}%, {c['texts_per_second']:.0f} texts/s" if "agreement" in c else "failed")
                for c in q8["candidates"]
            )
            + ".",
        ]
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
