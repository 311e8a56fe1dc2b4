"""Model selection: transferability estimators against references, features from any layer
(``model.feature_layer``), the ranking, its recommendation and ``scripts/select_checkpoint.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, toy_rows, write_csv

from nlp_transfer.errors import ConfigError

pytest.importorskip("transformer_ranker")

from nlp_transfer.transfer.estimators import transferability  # noqa: E402


# ---- the estimators against independent computations ----------------------------------------------------
def _max_evidence(x: np.ndarray, t: np.ndarray) -> float:
    """LogME by definition: max over (alpha, beta) of log N(t; 0, I/beta + X X^T / alpha), per example.

    The covariance shares the eigenvectors of X X^T (eigenvalues s), so its log-density is a sum over them:
    -(n log 2 pi + sum log(1/beta + s/alpha) + sum (U^T t)^2 / (1/beta + s/alpha)) / 2."""
    from scipy.optimize import minimize

    n = len(t)
    s, u = np.linalg.eigh(x @ x.T)
    s = np.clip(s, 0.0, None)
    proj = (u.T @ t) ** 2

    def neg(log_ab):
        a, b = np.exp(log_ab)
        eig = 1.0 / b + s / a
        return 0.5 * (n * np.log(2 * np.pi) + np.log(eig).sum() + (proj / eig).sum()) / n

    return -minimize(neg, [0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000}).fun


def _data(n=150, d=12, separable=False, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = rng.integers(0, 3, size=n)
    if separable:
        x[:, :3] += 4.0 * np.eye(3)[y]
    return x, y


@pytest.mark.parametrize("separable", [False, True])
def test_logme_is_the_maximum_evidence_averaged_over_classes(separable):
    x, y = _data(separable=separable)
    ref = np.mean([_max_evidence(x, (y == c).astype(float)) for c in range(3)])
    assert transferability("logme", x, y, "single_label") == pytest.approx(ref, abs=1e-5)


def test_logme_of_a_regression_and_of_a_multi_label_task():
    x, _ = _data()
    rng = np.random.default_rng(1)
    t = x[:, 0] * 2 + rng.normal(size=len(x))
    assert transferability("logme", x, t, "regression") == pytest.approx(_max_evidence(x, t), abs=1e-5)
    multi = np.stack([(x[:, 0] > 0), (x[:, 1] + rng.normal(size=len(x)) > 0), rng.integers(0, 2, len(x))], 1).astype(float)
    ref = np.mean([_max_evidence(x, multi[:, j]) for j in range(3)])
    assert transferability("logme", x, multi, "multi_label") == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("separable", [False, True])
def test_hscore_matches_a_ledoit_wolf_computation(separable):
    from sklearn.covariance import LedoitWolf

    x, y = _data(separable=separable)
    xc = x - x.mean(0)
    lw = LedoitWolf(assume_centered=True).fit(xc)
    means = np.stack([xc[y == c].mean(0) * np.sqrt((y == c).sum()) for c in range(3)])
    ref = np.trace(np.linalg.pinv(lw.covariance_) @ ((1 - lw.shrinkage_) * means.T @ means / (len(x) - 1)))
    assert transferability("hscore", x, y, "single_label") == pytest.approx(ref, rel=1e-6)
    assert transferability("hscore", x, x[:, 0], "regression") is None  # no classes to separate


def test_knn_is_the_leave_one_out_vote_of_three_neighbours():
    from sklearn.neighbors import NearestNeighbors

    x, y = _data(n=120, separable=True)
    y = (y > 0).astype(int)  # two classes: three neighbours never tie
    idx = NearestNeighbors(n_neighbors=4).fit(x).kneighbors(x, return_distance=False)[:, 1:]
    pred = (y[idx].sum(1) >= 2).astype(int)
    from sklearn.metrics import f1_score

    assert transferability("knn", x, y, "single_label") == pytest.approx(f1_score(y, pred), abs=1e-6)


def test_every_estimator_prefers_separable_features_to_noise():
    noise, y = _data(seed=3)
    signal = noise.copy()
    signal[:, :3] += 4.0 * np.eye(3)[y]
    for e in ("logme", "hscore", "knn"):
        assert transferability(e, signal, y, "single_label") > transferability(e, noise, y, "single_label") + 0.05, e


def test_a_layer_with_planted_signal_ranks_first():
    from nlp_transfer.experiments.selection import score_features

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    feats = {}
    for layer in range(1, 7):
        x = rng.normal(size=(300, 16))
        strength = 2.5 if layer == 4 else 0.4 * (layer % 3)  # a weak signal elsewhere, a strong one in layer 4
        x[:, 0] += strength * (2 * y - 1)
        feats[(layer, "mean")] = torch.as_tensor(x)
    rows = score_features(feats, y, "single_label", ["logme", "hscore", "knn"])
    for e in ("logme", "hscore", "knn"):
        assert max(rows, key=lambda r: r[e])["layer"] == 4, e


def test_rank_correlations_are_scipy_s():
    from nlp_transfer.experiments.selection import rank_correlations

    rows = [{"logme": s, "probe": {"score": p}} for s, p in [(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.9)]]
    c = rank_correlations(rows, ["logme"])["logme"]
    assert c["kendall_tau"] == pytest.approx(4 / 6)  # 5 concordant pairs, 1 discordant
    assert c["spearman_rho"] == pytest.approx(0.8)


# ---- features from any layer ----------------------------------------------------------------------------
def _model_cfg(d, **kw):
    from nlp_transfer.config import ModelConfig

    return ModelConfig(name_or_path=str(d), max_length=32, **kw)


@pytest.fixture(params=["bert", "gpt2", "llama"])
def any_backbone(request, tiny_bert_dir, tiny_gpt2_dir, tiny_llama_dir):
    return {"bert": tiny_bert_dir, "gpt2": tiny_gpt2_dir, "llama": tiny_llama_dir}[request.param]


def test_layer_features_equal_the_cut_models_features(any_backbone):
    """One forward pass over every layer gives what a model cut at that layer (model.feature_layer) encodes:
    the final norm of GPT-2 and Llama included, padding on either side."""
    from nlp_transfer.recipes import build_classifier

    full, tok = build_classifier(_model_cfg(any_backbone, pooling="mean"), ["a", "b"])
    batch = tok(["good movie", "the plot was awful and boring", "fine"], padding=True, return_tensors="pt")
    with torch.no_grad():
        both = full.eval().layer_features(**batch, layers=[1, 2], poolings=["mean", "last"])
    for n in (1, 2):
        for j, how in enumerate(["mean", "last"]):
            cut, _ = build_classifier(_model_cfg(any_backbone, pooling=how, feature_layer=n), ["a", "b"])
            assert cut.backbone.config.num_hidden_layers == n and cut.meta["feature_layer"] == n
            with torch.no_grad():
                torch.testing.assert_close(cut.eval().encode(**batch), both[:, (n - 1) * 2 + j], rtol=1e-5, atol=1e-6)


def test_layer_features_with_the_pooler_and_only_the_layers_needed(tiny_bert_dir):
    from nlp_transfer.recipes import build_classifier

    full, tok = build_classifier(_model_cfg(tiny_bert_dir, pooling="pooler"), ["a", "b"])
    cut, _ = build_classifier(_model_cfg(tiny_bert_dir, pooling="pooler", feature_layer=1), ["a", "b"])
    batch = tok(["good movie", "dull"], padding=True, return_tensors="pt")
    ran = []
    hook = full.backbone.encoder.layer[1].register_forward_hook(lambda *a: ran.append(1))
    with torch.no_grad():
        feats = full.eval().layer_features(**batch, layers=[1], poolings=["pooler"])
        torch.testing.assert_close(cut.eval().encode(**batch), feats[:, 0])
    hook.remove()
    assert ran == []  # layer 2 never ran


def test_feature_layer_counts_from_the_top_and_names_the_range(tiny_bert_dir):
    from nlp_transfer.recipes import build_classifier

    model, _ = build_classifier(_model_cfg(tiny_bert_dir, feature_layer=-2), ["a", "b"])
    assert model.backbone.config.num_hidden_layers == 1 and len(model.backbone.encoder.layer) == 1
    with pytest.raises(ConfigError, match=r"model.feature_layer=3 but .* has 2 layers; use 1..2"):
        build_classifier(_model_cfg(tiny_bert_dir, feature_layer=3), ["a", "b"])
    with pytest.raises(ConfigError, match="layers count from 1"):
        _model_cfg(tiny_bert_dir, feature_layer=0)


def test_zero_shot_refuses_a_feature_layer():
    from nlp_transfer import RecipeConfig

    with pytest.raises(ConfigError, match="remove model.feature_layer"):
        RecipeConfig.from_dict({"model": {"prompt": "{text} is", "feature_layer": 1}, "transfer": {"mode": "zero_shot"}})


def test_a_cut_run_saves_reloads_and_keys_its_cache_by_layer(tmp_path, make_cfg):
    """Feature extraction from layer 1: the run saves one layer and reloads to the same predictions; the cached
    features of layer 1 and of the last layer are different cache entries with different vectors."""
    from nlp_transfer import load_run, train
    from nlp_transfer.transfer.caches import feature_key

    assert (
        feature_key("m", "t", pooling="mean", max_length=8, precision="no", tokenizer=_Tok(), layer=1)[0]
        != feature_key("m", "t", pooling="mean", max_length=8, precision="no", tokenizer=_Tok(), layer=2)[0]
    )
    cache = tmp_path / "cache"
    runs = {}
    for layer in (1, None):
        cfg = make_cfg(
            tmp_path / str(layer),
            "transfer.mode=feature_extraction",
            "model.head=logreg",
            f"model.feature_layer={'null' if layer is None else layer}",
            f"transfer.cache_dir={cache}",
        )
        runs[layer] = train(cfg, progress=False)
    files = sorted((cache / "features").glob("*.safetensors"))
    assert len(files) == 6  # three splits, two layers: nothing shared
    assert runs[1].timing["cache"]["features"]["misses"] == ["train", "validation", "test"]
    manifest = json.loads((Path(runs[1].output_dir) / "nlp_transfer.json").read_text())
    assert manifest["feature_layer"] == 1
    config = json.loads((Path(runs[1].output_dir) / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    texts = ["good fine movie", "a dull and tedious plot"]
    live = load_run(runs[1].output_dir)
    assert len(live.model.backbone.encoder.layer) == 1
    probs = live.predict(texts).probabilities
    assert not np.allclose(probs, load_run(runs[None].output_dir).predict(texts).probabilities)


class _Tok:
    pad_token_id, padding_side, truncation_side = 0, "right", "right"

    def __len__(self):
        return 10


def test_an_adapter_run_on_a_cut_backbone_reloads(tmp_path, make_cfg):
    """LoRA on the layers kept: the run stores the adapter alone; reloading cuts the base the same way (the base
    fingerprint matches) and reproduces the live logits."""
    from nlp_transfer import load_run, train

    cfg = make_cfg(tmp_path, "transfer.mode=lora", "model.feature_layer=1", "train.epochs=1")
    result = train(cfg, progress=False)
    run = load_run(result.output_dir)
    assert run.model.meta["feature_layer"] == 1
    again = load_run(result.output_dir)
    texts = ["good fine movie", "a dull plot"]
    np.testing.assert_allclose(run.predict(texts).probabilities, again.predict(texts).probabilities, atol=1e-6)
    assert result.test["accuracy"] == pytest.approx(json.loads((Path(result.output_dir) / "metrics.json").read_text())["test"]["accuracy"])


# ---- scripts/select_checkpoint.py ----------------------------------------------------------------------------------
def _select(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "scripts/select_checkpoint.py", "--no-progress", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("select-data") / "toy.csv", toy_rows(240, seed=5))


def test_select_ranks_every_candidate_layer_and_pooling_and_its_recipe_trains(tmp_path, toy_data, tiny_bert_dir, tiny_llama_dir):
    out = tmp_path / "sel"
    proc = _select(
        f"data.train_file={toy_data}",
        "data.source=null",
        "model.max_length=32",
        "train.num_threads=1",
        "--candidates",
        tiny_bert_dir,
        tiny_llama_dir,
        "--pooling",
        "mean",
        "last",
        "--validate",
        "--out",
        out,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranking = json.loads((out / "ranking.json").read_text())
    rows = ranking["rows"]
    assert len(rows) == 2 * 2 * 2  # checkpoints x layers x poolings
    assert [r["rank"] for r in rows] == list(range(1, 9))
    assert [r["logme"] for r in rows] == sorted((r["logme"] for r in rows), reverse=True)
    assert all(r["hscore"] is not None and 0 <= r["knn"] <= 1 and 0 <= r["probe"]["score"] <= 1 for r in rows)
    assert set(ranking["validation"]["correlations"]) == {"logme", "hscore", "knn"}
    assert all(c["encode_seconds"] > 0 and not c["from_cache"] for c in ranking["candidates"])
    assert (out / "ranking.md").read_text().count("\n| ") == 9  # header + 8 rows
    if pytest.importorskip("matplotlib"):
        assert (out / f"layers-{tiny_bert_dir.name}.png").stat().st_size > 1000
    rec, best = ranking["recommendation"], rows[0]
    assert (rec["checkpoint"], rec["layer"], rec["pooling"]) == (best["checkpoint"], best["layer"], best["pooling"])
    assert "accelerate launch -m nlp_transfer train --config" in proc.stdout and "recipe.yaml" in proc.stdout
    # The recommendation is a recipe that trains: the printed line, run as printed (one process).
    line = next(ln for ln in proc.stdout.splitlines() if "accelerate launch -m nlp_transfer train --config" in ln)
    recipe = line.split("--config", 1)[1].split()[0]
    train = subprocess.run(
        [sys.executable, "scripts/train.py", "--config", recipe, "--no-progress", "train.num_threads=1", f"output.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "nlp_transfer.json").read_text())
    assert manifest["pooling"] == best["pooling"] and manifest["head"] == "logreg"
    assert manifest["feature_layer"] == (None if best["layer"] == best["num_layers"] else best["layer"])
    # Again: every feature set from the cache, the same scores.
    again = _select(
        f"data.train_file={toy_data}",
        "data.source=null",
        "model.max_length=32",
        "train.num_threads=1",
        "--candidates",
        tiny_bert_dir,
        tiny_llama_dir,
        "--pooling",
        "mean",
        "last",
        "--out",
        tmp_path / "again",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads((tmp_path / "again" / "ranking.json").read_text())
    assert all(c["from_cache"] and c["encode_seconds"] == 0 for c in second["candidates"])
    assert {(r["checkpoint"], r["layer"], r["pooling"]): r["logme"] for r in second["rows"]} == {
        (r["checkpoint"], r["layer"], r["pooling"]): r["logme"] for r in rows
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layers", "3"], "--layers=3 but"),
        (["--pooling", "cls"], "--pooling cls reads the first token"),
        (["--pooling", "avg"], "unknown pooling 'avg'"),
        (["--estimators", "knn"], "keep logme"),
        (["transfer.mode=full"], "takes data.*, model.* and train.* keys"),
        (["--reference-run", "nowhere"], "has no metrics.json"),
    ],
)
def test_select_mistakes_are_one_line_and_write_nothing(tmp_path, toy_data, tiny_llama_dir, args, message, capsys):
    """In-process through run_cli, as scripts/select_checkpoint.py runs it (the subprocess path: the tests above and below)."""
    from nlp_transfer.cli import run_cli, select_main

    out = tmp_path / "sel"
    argv = [
        f"data.train_file={toy_data}",
        "data.source=null",
        "model.max_length=32",
        "--candidates",
        str(tiny_llama_dir),
        "--out",
        str(out),
        "--no-progress",
        *args,
    ]
    assert run_cli(select_main, argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err[-2000:]
    assert "Traceback" not in err
    assert not out.exists()


def test_select_needs_data():
    proc = _select("--candidates", "minilm", "--out", "/tmp/never")
    assert proc.returncode == 2 and "--data SOURCE" in proc.stderr


def test_select_help_imports_no_torch():
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "scripts/select_checkpoint.py", "--help"], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0 and "transferability" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"torch", "datasets", "accelerate", "transformers"}


def test_no_script_shadows_a_standard_library_module():
    """`python scripts/X.py` puts scripts/ first on sys.path: a script named like a standard library module (select.py
    did) would be imported in its place by every other script (subprocess imports select)."""
    shadowing = sorted(p.stem for p in (REPO / "scripts").glob("*.py") if p.stem in sys.stdlib_module_names)
    assert not shadowing, f"scripts named like standard library modules: {shadowing}"
    code = "import sys; sys.path.insert(0, 'scripts'); import select, subprocess; print(hasattr(select, 'select'), subprocess.run(['true']).returncode)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.split() == ["True", "0"], out.stderr[-2000:]


@pytest.mark.parametrize("task", ["multi_label", "regression"])
def test_select_scores_multi_label_and_regression_data(tmp_path, tiny_bert_dir, task):
    from nlp_transfer import RecipeConfig
    from nlp_transfer.experiments.selection import rank_checkpoints

    rng = np.random.default_rng(0)
    rows = toy_rows(160, seed=2)
    if task == "multi_label":
        data = [(t, "pos|long" if lab == "pos" and len(t) > 30 else lab) for t, lab in rows]
        extra = {"label_separator": "|"}
    else:
        data = [(t, f"{(1.0 if lab == 'pos' else 0.0) + rng.normal(0, 0.1):.3f}") for t, lab in rows]
        extra = {"task": "regression"}
    path = write_csv(tmp_path / "d.csv", data)
    cfg = RecipeConfig.from_dict(
        {
            "model": {"max_length": 32},
            "data": {"source": None, "train_file": str(path), **extra},
            "train": {"num_threads": 1, "mixed_precision": "no"},
        }
    )
    sel = rank_checkpoints(cfg, [str(tiny_bert_dir)], ["all"], ["mean"], tmp_path / "out", validate=True, progress=False)
    assert sel.sample["task"] == task and len(sel.rows) == 2
    assert all(np.isfinite(r["logme"]) and np.isfinite(r["knn"]) for r in sel.rows)
    assert all((r.get("hscore") is None) == (task == "regression") for r in sel.rows)
    assert sel.rows[0]["probe"]["metric"] == {"multi_label": "f1_micro", "regression": "pearson"}[task]
    assert (tmp_path / "out" / "ranking.json").is_file()
