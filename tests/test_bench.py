"""scripts/bench.py: the FLOP count behind MFU and the tables (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_model_flops_by_hand(bench):
    config = SimpleNamespace(hidden_size=4, num_hidden_layers=2, intermediate_size=8)
    # a layer has 4*16 + 2*4*8 = 128 matmul weights; texts of 3 and 5 tokens (8 tokens, 2 texts)
    lower = 6 * 128 * 8 + 12 * 4 * (9 + 25)  # layer 1: every token, all query-key pairs
    last = 6 * 32 * 8 + 6 * (128 - 32) * 2 + 12 * 4 * 8  # layer 2: keys and values of every token, the rest for token 0
    head = 6 * (16 + 4 * 3) * 2  # pooler and classifier once per text
    assert bench._model_flops(config, [3, 5], epochs=2, num_labels=3) == 2 * (lower + last + head) == 22368


def _row(seconds, samples, **kw):
    return {"seconds": seconds, "samples": samples, "samples_per_second": samples / seconds, "peak_mb": 1000.0, **kw}


def test_speed_table_shows_every_run_and_the_ratios(bench):
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
        "command": "python scripts/bench.py speed",
    }
    table = bench.speed_table(res)
    assert "**3.12x** default, **1.25x** best" in table
    assert "**20.0x**" in table and "**3.50x**" in table and "99.90%" in table
    assert table.count("\n| ") == 8  # header + 7 runs
    json.dumps(res)  # the results file is plain JSON


def test_cache_table_has_a_pair_of_rows_and_a_ratio_per_partial_depth(bench):
    row = lambda run, fit: {"run": run, "fit_seconds": fit, "wall_seconds": fit + 1, "accuracy": 0.8, "f1_macro": 0.79}  # noqa: E731
    res = {
        "dataset": "rotten_tomatoes",
        "sizes": {"train": 100, "validation": 10, "test": 10},
        "machine": {"cpu_count": 2},
        "date": "2026-11-23",
        "command": "python scripts/bench.py cache",
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
    table = bench.cache_table(res)
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
def test_partial_top_must_be_positive_layer_counts(bench, text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated list"):
        bench._int_list(text)
    assert bench._int_list("2,1") == [2, 1]


def test_adapters_table_compares_the_cached_and_uncached_top_layer_runs(bench):
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
        "cpu": "Some CPU",
        "machine": {"cpu_count": 2},
        "date": "2026-12-02",
        "command": "python scripts/bench.py adapters",
    }
    table = bench.adapters_table(res)
    body = [line for line in table.splitlines() if line.startswith("| ") and "run |" not in line]
    assert [line.split(" | ")[0][2:] for line in body] == ["every layer", "top 2, plain", "top 2, cached"]
    assert "| 332,546 | 60.0 |" in body[0] and body[2].endswith("**2.50x** |") and body[1].endswith("1.0x |")
    assert "**2.50x** per epoch, 2.36x on the fit" in table and "Some CPU" in table
    json.dumps(res)


def test_ship_table_has_every_backend_stream_size_and_server_row(bench):
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
        "command": "python scripts/bench.py ship",
    }
    table = bench.ship_table(res)
    assert "| **ONNX int8** (dynamic quantization) | 300.0 | 3.00x | 99.50% | 0.7650 |" in table
    assert "| 1,000,000 | tiny BERT | 420 |" in table and "| 10,000 | MiniLM-L6 (the run above) | 800 |" in table
    assert "varies by 5.0%" in table and "Some CPU" in table
    assert table.count("| MiniLM run,") == 2
    json.dumps(res)
