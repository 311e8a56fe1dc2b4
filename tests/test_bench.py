"""benchmarks/: the FLOP count behind MFU, the tables, the shared harness (ratios, results files, fresh-process
measurements) and the `python -m benchmarks` entry point (no timing is asserted)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import adapters, cache, distill, harness, ship, speed
from nlp_transfer.errors import ConfigError
from nlp_transfer.reporting.tables import check_readme

ROOT = Path(__file__).resolve().parent.parent


def test_model_flops_by_hand():
    config = SimpleNamespace(hidden_size=4, num_hidden_layers=2, intermediate_size=8)
    # a layer has 4*16 + 2*4*8 = 128 matmul weights; texts of 3 and 5 tokens (8 tokens, 2 texts)
    lower = 6 * 128 * 8 + 12 * 4 * (9 + 25)  # layer 1: every token, all query-key pairs
    last = 6 * 32 * 8 + 6 * (128 - 32) * 2 + 12 * 4 * 8  # layer 2: keys and values of every token, the rest for token 0
    head = 6 * (16 + 4 * 3) * 2  # pooler and classifier once per text
    assert speed.model_flops(config, [3, 5], epochs=2, num_labels=3) == 2 * (lower + last + head) == 22368


def _row(seconds, samples, **kw):
    return {"seconds": seconds, "samples": samples, "samples_per_second": samples / seconds, "peak_mb": 1000.0, **kw}


def test_speed_table_shows_every_run_and_the_ratios():
    rows = {
        "peak": {"fp32_gflops": 300.0, "bf16_gflops": 1500.0},
        "trainer_default": _row(50, 2560, precision="fp32", accuracy=0.75, mfu=0.25, tokens_per_second=1300.0),
        "trainer_best": _row(20, 2560, precision="bf16", accuracy=0.76, mfu=0.14, tokens_per_second=3500.0),
        "ours_full": _row(16, 2560, precision="bf16", accuracy=0.77, mfu=0.16, tokens_per_second=4000.0),
        "trainer_frozen": _row(110, 12800, precision="fp32", accuracy=0.65),
        "ours_fe": _row(5.5, 12800, precision="bf16", accuracy=0.66),
        "pipeline": _row(7, 1276, accuracy=0.77),
        "ours_predict": _row(2, 1276, accuracy=0.77),
    }
    res = {
        "rows": rows,
        "ratios": {
            "full_vs_trainer_default": 50 / 16,
            "full_vs_trainer_best": 20 / 16,
            "fe_vs_trainer_frozen": 110 / 5.5,
            "predict_vs_pipeline": 3.5,
            "predict_agreement": 0.999,
        },
        "settings": {"train_samples": 2560, "batch_size": 32, "max_length": 128, "epochs": 1, "fe_epochs": 5},
        "machine": {"cuda": None, "cpu_count": 2, "threads": 2},
        "date": "2026-11-23",
        "command": "python -m benchmarks speed",
    }
    table = speed.table(res)
    assert "**3.12x** default, **1.25x** best" in table
    assert "**20.0x**" in table and "**3.50x**" in table and "99.90%" in table
    assert table.count("\n| ") == 8  # header + 7 runs
    json.dumps(res)  # the results file is plain JSON


def test_cache_table_has_a_pair_of_rows_and_a_ratio_per_partial_depth():
    row = lambda run, fit: {"run": run, "fit_seconds": fit, "wall_seconds": fit + 1, "accuracy": 0.8, "f1_macro": 0.79}  # noqa: E731
    res = {
        "dataset": "rotten_tomatoes",
        "sizes": {"train": 100, "validation": 10, "test": 10},
        "machine": {"cpu_count": 2},
        "date": "2026-11-23",
        "command": "python -m benchmarks cache",
        "fe_epochs": 5,
        "partial_epochs": 3,
        "partial_top": [2, 1],
        "rows": {
            "fe_uncached": row("fe plain", 60.0),
            "fe_cold": row("fe cold", 15.0),
            "fe_warm": row("fe warm", 3.0),
            "partial_uncached": row("top-2 plain", 90.0),
            "partial_cached": row("top-2 cached", 60.0),
            "partial1_uncached": row("top-1 plain", 80.0),
            "partial1_cached": row("top-1 cached", 40.0),
        },
        "ratios": {
            "fe_warm_vs_uncached_fit": 20.0,
            "fe_cold_vs_uncached_fit": 4.0,
            "fe_warm_vs_uncached_wall": 15.25,
            "partial_cached_vs_uncached_fit": 1.5,
            "partial_cached_vs_uncached_wall": 1.49,
            "partial1_cached_vs_uncached_fit": 2.0,
            "partial1_cached_vs_uncached_wall": 1.98,
        },
    }
    table = cache.table(res)
    body = [line for line in table.splitlines() if line.startswith("| ") and "run |" not in line]
    assert [line.split(" | ")[0][2:] for line in body] == [
        "fe plain",
        "fe cold",
        "fe warm",
        "top-2 plain",
        "top-2 cached",
        "top-1 plain",
        "top-1 cached",
    ]
    assert "**1.50x**" in body[4] and "**2.00x**" in body[6]
    assert "top-2 **1.50x** (fit; 1.49x whole call); top-1 **2.00x** (fit; 1.98x whole call)" in table


@pytest.mark.parametrize("text", ["", "2,x", "0", "-1,2"])
def test_partial_top_must_be_positive_layer_counts(text):
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated list"):
        harness.int_list(text)
    assert harness.int_list("2,1") == [2, 1]


def test_adapters_table_compares_the_cached_and_uncached_top_layer_runs():
    row = lambda run, epoch, params: {
        "run": run,
        "epoch_seconds": epoch,
        "encode_seconds": 5.0,
        "fit_seconds": 3 * epoch + 5,  # noqa: E731
        "wall_seconds": 3 * epoch + 9,
        "trainable": params,
        "accuracy": 0.8,
        "f1_macro": 0.79,
    }
    res = {
        "rows": {
            "all_layers": row("every layer", 60.0, 332546),
            "top_uncached": row("top 2, plain", 40.0, 111362),
            "top_cached": row("top 2, cached", 16.0, 111362),
        },
        "ratios": {"epoch": 2.5, "fit": 125 / 53, "wall": 129 / 57},
        "sizes": {"train": 100, "validation": 10, "test": 10},
        "dataset": "rotten_tomatoes",
        "epochs": 3,
        "top": 2,
        "machine": {"cpu": "Some CPU", "cpu_count": 2},
        "date": "2026-12-02",
        "command": "python -m benchmarks adapters",
    }
    table = adapters.table(res)
    body = [line for line in table.splitlines() if line.startswith("| ") and "run |" not in line]
    assert [line.split(" | ")[0][2:] for line in body] == ["every layer", "top 2, plain", "top 2, cached"]
    assert "| 332,546 | 60.0 |" in body[0] and body[2].endswith("**2.50x** |") and body[1].endswith("1.0x |")
    assert "**2.50x** per epoch, 2.36x on the fit" in table and "Some CPU" in table
    json.dumps(res)


def test_ship_table_has_every_backend_stream_size_and_server_row():
    pred = lambda sps, agree, acc: {
        "samples": 1280,
        "samples_per_second": sps,
        "agreement": agree,
        "accuracy": acc,  # noqa: E731
        "size_mb": 90.0,
        "peak_mb": 700.0,
    }
    stream = lambda n, mb: {"samples": n, "samples_per_second": 5000.0, "peak_mb": mb}  # noqa: E731
    serve = {"requests_per_second": 40.0, "texts_per_second": 40.0, "p50_ms": 150.0, "p99_ms": 400.0, "mean_batch_texts": 6.5}
    res = {
        "rows": {
            "torch_fp32": pred(100.0, 1.0, 0.77),
            "torch_run": pred(180.0, 0.998, 0.77),
            "onnx_fp32": pred(150.0, 1.0, 0.77),
            "onnx_int8": pred(300.0, 0.995, 0.765),
        },
        "stream": {
            "stream_10000": stream(10_000, 400.0),
            "memory_10000": stream(10_000, 450.0),
            "stream_1000000": stream(1_000_000, 420.0),
            "minilm_stream_10000": stream(10_000, 800.0),
        },
        "serve": {"torch": serve, "onnx_int8": serve},
        "ratios": {"onnx_fp32_vs_torch": 1.5, "onnx_int8_vs_torch": 3.0, "stream_peak_spread": 0.05},
        "settings": {
            "max_samples": 3000,
            "chunk_size": 10_000,
            "stream_rows": [10_000, 1_000_000],
            "requests": 400,
            "concurrency": 8,
            "per_request": 1,
        },
        "machine": {"cpu": "Some CPU", "cpu_count": 2, "threads": 2, "torch": "2.13.0"},
        "date": "2026-12-04",
        "command": "python -m benchmarks ship",
    }
    table = ship.table(res)
    assert "| **ONNX int8** (chosen at export, below) | 300.0 | 3.00x | 99.50% | 0.7650 |" in table
    assert "| 1,000,000 | tiny BERT | 420 |" in table and "| 10,000 | MiniLM-L6 (the run above) | 800 |" in table
    assert "varies by 5.0%" in table and "Some CPU" in table
    assert table.count("| MiniLM run,") == 2
    json.dumps(res)


def test_speedup_reads_times_as_reference_over_new_and_rates_as_new_over_reference():
    rows = {"ref": {"seconds": 30.0, "samples_per_second": 10.0}, "new": {"seconds": 10.0, "samples_per_second": 30.0}}
    assert harness.speedup(rows, "new", "ref") == 3.0
    assert harness.speedup(rows, "new", "ref", "samples_per_second") == 3.0
    assert harness.speedup(rows, "ref", "new", "samples_per_second") == pytest.approx(1 / 3)
    assert harness.agreement(["a", "b", "a", "b"], ["a", "b", "b", "b"]) == 0.75


def test_results_go_to_json_markdown_and_the_block_of_any_markdown_page(tmp_path):
    page = tmp_path / "docs" / "results" / "speed.md"
    page.parent.mkdir(parents=True)
    page.write_text(
        "# Speed\n\n<!-- results:bench-speed -->\nold table\n<!-- /results:bench-speed -->\n\n<!-- results:other -->\nkept\n<!-- /results:other -->\n"
    )
    args = SimpleNamespace(bench="speed", argv=["speed", "--threads", "3", "--readme", str(page)], threads=3)
    res = harness.record(args, rows={"a": {"seconds": 1.0}})
    assert res["command"] == f"python -m benchmarks speed --threads 3 --readme {page}" and res["benchmark"] == "speed"
    assert len(res["date"]) == 10 and res["machine"]["threads"] == 3 and res["machine"]["cpu_count"] >= 1
    check_readme(page, "bench-speed")
    harness.write(res, "| new | table |", tmp_path / "out" / "bench_speed.json", page)
    assert json.loads((tmp_path / "out" / "bench_speed.json").read_text()) == res
    assert (tmp_path / "out" / "bench_speed.md").read_text() == "| new | table |\n"
    text = page.read_text()
    assert "<!-- results:bench-speed -->\n| new | table |\n<!-- /results:bench-speed -->" in text
    assert "old table" not in text and "kept" in text


def test_a_markdown_file_without_the_block_fails_before_any_measurement(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- /results:bench-cache -->\n<!-- results:bench-cache -->\n")  # end marker before the start
    for path, section in ((tmp_path / "missing.md", "bench-cache"), (page, "bench-cache"), (page, "bench-ship")):
        with pytest.raises(ConfigError, match="results:"):
            check_readme(path, section)
    out = tmp_path / "out" / "bench_cache.json"
    p = subprocess.run(
        [sys.executable, "-m", "benchmarks", "cache", "--readme", str(page), "--out", str(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr, p.stderr
    assert not out.parent.exists()


def test_every_benchmark_has_its_help():
    top = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert top.returncode == 0 and "{cache,adapters,speed,ship,distill}" in top.stdout
    for module in (cache, adapters, speed, ship, distill):
        p = subprocess.run([sys.executable, "-m", "benchmarks", module.NAME, "--help"], cwd=ROOT, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith(f"usage: python -m benchmarks {module.NAME} ")
        assert module.__doc__.splitlines()[0] in p.stdout and module.HELP in " ".join(top.stdout.split())
        assert f"results/bench_{module.NAME}.json" in p.stdout and f"bench-{module.NAME}" in p.stdout and "--readme" in p.stdout


def test_a_measurement_runs_in_a_fresh_process_and_a_failing_one_stops_the_benchmark():
    row = harness.run_child(harness.matmul_peak, {"peak_sizes": [32], "peak_flops": 1, "threads": 1})
    assert set(row) == {"fp32_gflops", "bf16_gflops"} and row["fp32_gflops"] > 0 and row["bf16_gflops"] > 0
    with pytest.raises(SystemExit, match="benchmark step 'mfu' failed"):
        harness.run_child(harness.mfu, {"threads": 1})


def test_the_benchmarks_stay_out_of_the_wheel():
    tomllib = pytest.importorskip("tomllib")

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert "nlp_transfer" in packages and not any(p.split(".")[0] in ("benchmarks", "tests", "scripts") for p in packages)


@pytest.mark.slow
def test_cache_benchmark_on_a_slice_writes_its_results_and_a_docs_page(tmp_path):
    """The whole `cache` benchmark on 32 examples per split (MiniLM): rows, ratios, machine, the page's block."""
    page = tmp_path / "cache.md"
    page.write_text("<!-- results:caches -->\n<!-- /results:caches -->\n")
    out = tmp_path / "bench_cache.json"
    argv = ["cache", "--max-samples", "32", "--fe-epochs", "1", "--partial-epochs", "1", "--partial-top", "1", "--threads", "1"]
    argv += ["--out", str(out), "--readme", str(page), "--section", "caches"]
    p = subprocess.run([sys.executable, "-m", "benchmarks", *argv], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(res["rows"]) == {"fe_uncached", "fe_cold", "fe_warm", "partial1_uncached", "partial1_cached"}
    assert res["sizes"] == {"train": 32, "validation": 32, "test": 32} and res["machine"]["threads"] == 1 and res["machine"]["cpu"]
    fe = res["rows"]
    assert res["ratios"]["fe_warm_vs_uncached_fit"] == pytest.approx(fe["fe_uncached"]["fit_seconds"] / fe["fe_warm"]["fit_seconds"])
    assert res["command"] == "python -m benchmarks " + " ".join(argv)
    table = out.with_suffix(".md").read_text()
    assert "| partial top-1, frozen-prefix cache |" in table and table.strip() in page.read_text()


def test_the_predict_step_times_the_first_texts_of_the_runs_own_test_split(make_cfg, tmp_path):
    """ship.predict (the ship and distill benchmarks' prediction step): the source run's test texts, cut to
    ``max_texts``, predicted by the run measured; the accuracy is that of the labels it returns."""
    from nlp_transfer import load_data, load_run, train

    cfg = make_cfg(tmp_path, "train.epochs=1")
    train(cfg, progress=False)
    run = cfg.output.dir
    row = ship.predict({"source_run": run, "run": run, "max_texts": 10, "warmup": 4})
    data = load_data(cfg.data)
    test = data.splits["test"]
    texts, truth = list(test["text"])[:10], [data.labels[i] for i in test["label"][:10]]
    assert row["samples"] == 10 and row["labels"] == list(load_run(run).predict(texts))
    assert row["accuracy"] == pytest.approx(sum(a == b for a, b in zip(row["labels"], truth)) / 10)
    assert row["seconds"] > 0 and row["size_mb"] > 0
