"""Which checkpoint, which layer, which pooling: transferability scores of frozen features, in seconds.

:func:`rank_checkpoints` encodes a stratified sample of the training split once per candidate checkpoint,
reading every requested layer in the same forward pass (:meth:`TextClassifier.layer_features`,
through the feature cache), scores each (checkpoint, layer, pooling) with the estimators of
:mod:`nlp_transfer.transfer.estimators`, ranks them by LogME and recommends the best as a
recipe (``model.feature_layer``, ``model.pooling``, logreg probe). With ``validate`` it also fits
the logistic-regression probe on every candidate (C picked on a validation sample, scored on a
test sample) and reports the rank correlation of each estimator with the probe's score, and the
time the scores took against the probes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from nlp_transfer.config import RecipeConfig
from nlp_transfer.errors import ConfigError
from nlp_transfer.transfer.estimators import ESTIMATORS, applies, transferability
from nlp_transfer.utils.paths import atomic_write

logger = logging.getLogger("nlp_transfer")

PRIMARY = "logme"
ESTIMATOR_NAMES = {"logme": "LogME", "hscore": "H-score", "knn": "kNN"}
PROBE_METRIC = {"single_label": "accuracy", "multi_label": "f1_micro", "regression": "pearson"}
SELECT_POOLINGS = ("mean", "last", "cls", "max", "pooler")
C_GRID = (0.01, 0.1, 1.0, 10.0)


@dataclasses.dataclass
class Selection:
    rows: list[dict]  # one per (checkpoint, layer, pooling), best LogME first
    candidates: list[dict]  # one per checkpoint: layers, encode and load seconds, cache hits
    recommendation: dict
    validation: dict | None  # with validate: rank correlations, each estimator's pick, misranked rows
    sample: dict  # sizes of the samples scored (and probed)
    timing: dict
    estimators: list[str]
    source: str  # the data, as named
    files: dict[str, Path] = dataclasses.field(default_factory=dict)

    def table(self, top: int | None = None) -> str:
        """The ranking as Markdown (the best ``top`` rows; all by default), with the recommendation and timing."""
        return ranking_table(self, top)


# ---- the candidates ---------------------------------------------------------------------------------
def resolve_layers(spec: list[str], num_layers: int, name: str) -> list[int]:
    """``all`` (1..L), ``last`` (L) or layer numbers (negative: from the top) as sorted numbers 1..L."""
    from nlp_transfer.models.layers import resolve_layer

    out: set[int] = set()
    for item in spec:
        if item == "all":
            out.update(range(1, num_layers + 1))
        elif item == "last":
            out.add(num_layers)
        else:
            out.add(resolve_layer(int(item), num_layers, "--layers", f"'{name}'"))
    return sorted(out)


def _check_poolings(poolings: list[str], model, name: str) -> None:
    for p in poolings:
        if p == "cls" and model.meta.get("kind") == "decoder":
            raise ConfigError(f"--pooling cls reads the first token, which in decoder '{name}' has seen nothing after it; use last or mean")
        if p == "pooler" and getattr(model.backbone, "pooler", None) is None:
            raise ConfigError(f"--pooling pooler but '{name}' has no pooler; use mean, last, cls or max")


def _load(cfg: RecipeConfig, name: str, labels: list[str]):
    from nlp_transfer.recipes import build_classifier

    model_cfg = dataclasses.replace(
        cfg.model,
        name_or_path=name,
        pooling="auto",
        feature_layer=None,
        head="linear",
        gguf_file=None if name != cfg.model.name_or_path else cfg.model.gguf_file,
    )
    model, tokenizer = build_classifier(model_cfg, labels)
    return model.eval(), tokenizer, model_cfg


# ---- encoding, through the feature cache ------------------------------------------------------------
def encode_candidate(
    model,
    tokenizer,
    ds,
    layers: list[int],
    poolings: list[str],
    accelerator,
    *,
    batch_size: int,
    max_length: int,
    cache_dir: str | None,
    use_cache: bool,
    desc: str,
    progress: bool,
    model_fp: str | None = None,
    fast_kernels: bool = True,
) -> tuple[dict[tuple[int, str], torch.Tensor], float, bool]:
    """{(layer, pooling): features [N, H]} of tokenized ``ds``; the encode seconds (0 when every one came from the
    cache) and whether they all did. One forward pass reads every layer."""
    from nlp_transfer.data.batching import PadCollator
    from nlp_transfer.models.fast import speedups
    from nlp_transfer.transfer.caches import FeatureCache, encode_rows, feature_key, fingerprint_model, fingerprint_tokens
    from nlp_transfer.utils.paths import cache_root

    combos = [(n, p) for n in layers for p in poolings]
    cache = FeatureCache(cache_root(cache_dir)) if use_cache else None
    keys: dict = {}
    if cache is not None:
        model_fp = model_fp or fingerprint_model(model)
        tokens_fp = fingerprint_tokens(ds)
        for n, p in combos:
            keys[(n, p)] = feature_key(
                model_fp, tokens_fp, pooling=p, max_length=max_length, precision=accelerator.mixed_precision, tokenizer=tokenizer, layer=n
            )
        found = {c: cache.load(keys[c][0], len(ds)) for c in combos}
        if all(v is not None for v in found.values()):
            return found, 0.0, True
    model.to(accelerator.device)
    t0 = time.perf_counter()
    fast = fast_kernels and accelerator.device.type == "cpu"  # the CPU attention kernel and allocator, as training encodes
    with speedups(model, dropout=False, attention=fast, first_token=False, allocator=fast):
        rows = encode_rows(
            lambda b: model.layer_features(**b, layers=layers, poolings=poolings),
            ds,
            PadCollator(tokenizer),
            batch_size,
            accelerator,
            desc,
            progress,
        )
    seconds = time.perf_counter() - t0
    stacked = torch.stack(rows)  # [N, layers * poolings, H]
    feats = {c: stacked[:, i].contiguous() for i, c in enumerate(combos)}
    if cache is not None and accelerator.is_main_process:
        for c in combos:
            cache.save(keys[c][0], feats[c], keys[c][1])
    return feats, seconds, False


# ---- the probe (--validate) -------------------------------------------------------------------------
def probe(task: str, train: tuple, validation: tuple, test: tuple, labels: list[str], seed: int) -> dict:
    """The linear probe of ``task`` on (features, targets) triples: logistic regression (single-label; per label
    for multi-label) or ridge regression, its regularisation picked on ``validation``; its test score
    (:data:`PROBE_METRIC`) and the regularisation chosen."""
    from nlp_transfer.metrics import compute_metrics, multilabel_metrics, regression_metrics
    from nlp_transfer.transfer.probe import fit_logreg

    (x, y), (xv, yv), (xt, yt) = [(f.double().numpy(), np.asarray(t)) for f, t in (train, validation, test)]
    metric = PROBE_METRIC[task]
    best = None
    for c in C_GRID:
        if task == "single_label":
            w, b = fit_logreg(x, y, len(labels), c, seed)
            predict = lambda f, w=w, b=b: (f @ w.T + b).argmax(1)  # noqa: E731
            measure = lambda t, p: compute_metrics(t, p, label_names=labels)  # noqa: E731
        elif task == "multi_label":
            fits = [_binary_logreg(x, y[:, j], c, seed) for j in range(y.shape[1])]
            predict = lambda f, fits=fits: np.stack([fit(f) for fit in fits], 1)  # noqa: E731
            measure = lambda t, p: multilabel_metrics(t, p, labels)  # noqa: E731
        else:
            predict = _ridge(x, y, 1.0 / c)
            measure = regression_metrics
        val = measure(yv, predict(xv))[metric]
        if best is None or val > best[0]:
            best = (val, c, predict, measure)
    _, c, predict, measure = best
    test_metrics = measure(yt, predict(xt))
    return {
        "score": float(test_metrics[metric]),
        "metric": metric,
        "C": c,
        **({"f1_macro": float(test_metrics["f1_macro"])} if "f1_macro" in test_metrics and metric != "f1_macro" else {}),
    }


def _binary_logreg(x, y, c, seed):
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:  # a label every (or no) training example has
        const = int(y[0]) if len(y) else 0
        return lambda f: np.full(len(f), const)
    mu, sigma = x.mean(0), x.std(0)
    sigma[sigma < 1e-8] = 1.0
    clf = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit((x - mu) / sigma, y)
    return lambda f: clf.predict((f - mu) / sigma)


def _ridge(x, y, alpha):
    from sklearn.linear_model import Ridge

    mu, sigma = x.mean(0), x.std(0)
    sigma[sigma < 1e-8] = 1.0
    reg = Ridge(alpha=alpha).fit((x - mu) / sigma, y.reshape(len(y), -1))
    return lambda f: reg.predict((f - mu) / sigma).reshape(len(f), *y.shape[1:])


def rank_correlations(rows: list[dict], estimators: list[str]) -> dict:
    """Kendall tau and Spearman rho between each estimator and the probe's score over ``rows``."""
    from scipy.stats import kendalltau, spearmanr

    probe_scores = [r["probe"]["score"] for r in rows]
    out = {}
    for e in estimators:
        pairs = [(r[e], p) for r, p in zip(rows, probe_scores) if r.get(e) is not None]
        if len(pairs) < 3:
            continue
        s, p = map(list, zip(*pairs))
        out[e] = {"kendall_tau": float(kendalltau(s, p).statistic), "spearman_rho": float(spearmanr(s, p).statistic)}
    return out


# ---- the whole selection ----------------------------------------------------------------------------
def rank_checkpoints(
    cfg: RecipeConfig,
    candidates: list[str],
    layers: list[str],
    poolings: list[str],
    out: str | Path,
    *,
    max_samples: int = 1000,
    validate: bool = False,
    estimators: list[str] | None = None,
    base_recipe: str | None = None,
    reference_run: str | None = None,
    progress: bool = True,
) -> Selection:
    """Score every (checkpoint, layer, pooling) of ``candidates`` on ``cfg``'s data; write ``out``/ranking.json,
    ranking.md, recipe.yaml and a plot of score by layer per checkpoint (all at the end: nothing before)."""
    from accelerate import Accelerator

    from nlp_transfer.training.precision import allow_precision_change, check_precision, resolve_precision, set_threads

    if cfg.model.chunking:
        raise ConfigError("nlp-transfer select scores one vector per text; set model.chunking=false")
    for p in poolings:
        if p not in SELECT_POOLINGS:
            raise ConfigError(f"unknown pooling '{p}' in --pooling; use {', '.join(SELECT_POOLINGS)}")
    reference = _reference_seconds(reference_run) if reference_run else None
    _quiet_datasets(progress)
    t_start = time.perf_counter()
    data, sampled, sample = _samples(cfg, max_samples, validate)
    estimators = [e for e in (estimators or ESTIMATORS) if applies(e, data.task)]
    precision = resolve_precision(cfg.train.mixed_precision)
    check_precision(precision)
    allow_precision_change(precision)
    accelerator = Accelerator(mixed_precision=precision)
    set_threads(cfg.train.num_threads)
    rows, cands = [], []
    for name in candidates:
        cand_rows, cand = _score_candidate(cfg, name, data, sampled, layers, poolings, estimators, validate, accelerator, progress)
        rows += cand_rows
        cands.append(cand)
    rows.sort(key=lambda r: -r[PRIMARY])
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    timing = _timing(cands, time.perf_counter() - t_start, reference, validate)
    validation = _validation(rows, estimators, timing) if validate else None
    sel = Selection(
        rows, cands, recommend(rows, data.task), validation, sample, timing, estimators, str(cfg.data.source or cfg.data.train_file)
    )
    sel.files = _write(Path(out), sel, cfg, base_recipe)
    return sel


def _quiet_datasets(progress: bool) -> None:
    import datasets

    from nlp_transfer.utils.progress import interactive

    if not (progress and interactive()):  # datasets' bars would write a line per update into a log file
        datasets.disable_progress_bars()


def _samples(cfg: RecipeConfig, max_samples: int, validate: bool):
    """The data, its stratified samples (train; validation and test with ``validate``) and their sizes."""
    from nlp_transfer.data.loading import load_data, stratified_sample

    data = load_data(cfg.data, cfg.model.num_labels)
    stratify, seed = data.task_type.stratify, cfg.train.seed
    splits = ("train", "validation", "test") if validate else ("train",)
    sampled = {s: stratified_sample(data.splits[s], max_samples, seed, stratify) for s in splits}
    sample = {s: len(d) for s, d in sampled.items()} | {"train_split": len(data.splits["train"]), "task": data.task}
    logger.info(
        f"{cfg.data.source or cfg.data.train_file}: {data.task} data, {len(data.labels)} labels; scoring on "
        f"{sample['train']:,} of {sample['train_split']:,} training examples"
        + (f", probes on {sample['validation']:,} validation / {sample['test']:,} test examples" if validate else "")
    )
    return data, sampled, sample


def _score_candidate(cfg, name, data, sampled, layers, poolings, estimators, validate, accelerator, progress):
    """(rows, summary) of one checkpoint: its features encoded once (or read from the cache), scored, probed."""
    import datasets

    from nlp_transfer.data.batching import tokenize
    from nlp_transfer.data.chunking import LongTextSpec
    from nlp_transfer.models.layers import find_layers
    from nlp_transfer.transfer.caches import fingerprint_model

    t0 = time.perf_counter()
    model, tokenizer, model_cfg = _load(cfg, name, data.labels)
    load_seconds = time.perf_counter() - t0
    depth = len(find_layers(model.backbone)[1])
    layer_list = resolve_layers(layers, depth, name)
    _check_poolings(poolings, model, name)
    tokens = tokenize(datasets.DatasetDict(sampled), tokenizer, model_cfg.max_length, LongTextSpec.from_config(model_cfg))
    y = {s: np.asarray(tokens[s]["labels"]) for s in tokens}
    fp = fingerprint_model(model) if cfg.transfer.cache_features else None
    enc = dict(
        batch_size=cfg.train.eval_batch_size,
        max_length=model_cfg.max_length,
        cache_dir=cfg.transfer.cache_dir,
        use_cache=cfg.transfer.cache_features,
        progress=progress,
        model_fp=fp,
        fast_kernels=cfg.train.fast_kernels,
    )
    feats, enc_seconds, hit = encode_candidate(
        model, tokenizer, tokens["train"], layer_list, poolings, accelerator, desc=f"{name}: encoding", **enc
    )
    held, probe_encode = {}, 0.0
    for split in ("validation", "test") if validate else ():
        held[split], s, _ = encode_candidate(
            model, tokenizer, tokens[split], layer_list, poolings, accelerator, desc=f"{name}: encoding {split}", **enc
        )
        probe_encode += s
    rows = score_features(
        feats, y["train"], data.task, estimators, {"checkpoint": name, "kind": model.meta.get("kind"), "num_layers": depth}
    )
    probe_seconds = probe_encode
    for row in rows if validate else ():
        t1 = time.perf_counter()
        c = (row["layer"], row["pooling"])
        row["probe"] = probe(
            data.task,
            (feats[c], y["train"]),
            (held["validation"][c], y["validation"]),
            (held["test"][c], y["test"]),
            data.labels,
            cfg.train.seed,
        )
        row["seconds"]["probe"] = round(time.perf_counter() - t1, 4)
        probe_seconds += row["seconds"]["probe"]
    score_seconds = sum(sum(v for k, v in r["seconds"].items() if k != "probe") for r in rows)
    cand = {
        "checkpoint": name,
        "kind": model.meta.get("kind"),
        "num_layers": depth,
        "layers": layer_list,
        "poolings": list(poolings),
        "load_seconds": round(load_seconds, 2),
        "encode_seconds": round(enc_seconds, 2),
        "from_cache": hit,
        "score_seconds": round(score_seconds, 3),
        **({"probe_seconds": round(probe_seconds, 2), "probe_encode_seconds": round(probe_encode, 2)} if validate else {}),
    }
    logger.info(
        f"{name}: {depth} layers; {len(feats)} feature sets ({len(layer_list)} layers x {len(poolings)} poolings) "
        + ("from the cache" if hit else f"encoded in {enc_seconds:.1f}s")
        + f", scored in {score_seconds:.2f}s"
        + (f"; probes {probe_seconds:.1f}s" if validate else "")
    )
    return rows, cand


def score_features(feats: dict, targets, task: str, estimators: list[str], about: dict | None = None) -> list[dict]:
    """One row per ``(layer, pooling)`` of ``feats`` ({(layer, pooling): features [N, H]}) with each estimator's
    score of ``targets`` and the seconds it took; ``about`` is copied into every row."""
    rows = []
    for (n, p), x in feats.items():
        row = {**(about or {}), "layer": n, "pooling": p, "seconds": {}}
        for e in estimators:
            t = time.perf_counter()
            row[e] = transferability(e, np.asarray(x), targets, task)
            row["seconds"][e] = round(time.perf_counter() - t, 4)
        rows.append(row)
    return rows


def _reference_seconds(run: str) -> dict:
    p = Path(run) / "metrics.json"
    if not p.is_file():
        raise ConfigError(f"--reference-run '{run}' has no metrics.json; pass the output.dir of a finished training run")
    timing = json.loads(p.read_text()).get("timing") or {}
    if not timing.get("total_seconds"):
        raise ConfigError(f"--reference-run '{run}': its metrics.json records no timing.total_seconds")
    return {"run": str(run), "seconds": float(timing["total_seconds"])}


def _timing(cands: list[dict], total: float, reference: dict | None, validate: bool) -> dict:
    encode = sum(c["encode_seconds"] for c in cands)
    scores = sum(c["score_seconds"] for c in cands)
    load = sum(c["load_seconds"] for c in cands)
    t = {
        "load_seconds": round(load, 2),
        "encode_seconds": round(encode, 2),
        "score_seconds": round(scores, 3),
        "selection_seconds": round(encode + scores, 2),
        "wall_seconds": round(total, 2),
    }
    if validate:
        t["probe_seconds"] = round(sum(c["probe_seconds"] for c in cands), 2)
    if reference:
        t["reference"] = {
            **reference,
            "selection_share": round((encode + scores) / reference["seconds"], 4),
            "with_loading_share": round((encode + scores + load) / reference["seconds"], 4),
        }
    return t


def _validation(rows: list[dict], estimators: list[str], timing: dict) -> dict:
    best_probe = max(rows, key=lambda r: r["probe"]["score"])
    out = {
        "metric": rows[0]["probe"]["metric"],
        "correlations": rank_correlations(rows, estimators),
        "best_by_probe": _ident(best_probe),
        "best_probe_score": best_probe["probe"]["score"],
        "picks": {},
    }
    for e in estimators:
        pick = max((r for r in rows if r.get(e) is not None), key=lambda r: r[e])
        out["picks"][e] = {
            **_ident(pick),
            "probe_score": pick["probe"]["score"],
            "regret": round(best_probe["probe"]["score"] - pick["probe"]["score"], 4),
        }
    per_ckpt = {}
    for name in dict.fromkeys(r["checkpoint"] for r in rows):
        sub = [r for r in rows if r["checkpoint"] == name]
        if len(sub) >= 3:
            per_ckpt[name] = rank_correlations(sub, estimators)
    out["per_checkpoint"] = per_ckpt
    by_probe = sorted(rows, key=lambda r: -r["probe"]["score"])
    probe_rank = {id(r): i for i, r in enumerate(by_probe, 1)}
    gaps = sorted(rows, key=lambda r: r["rank"] - probe_rank[id(r)])
    out["misranked"] = (
        [{**_ident(r), "rank": r["rank"], "probe_rank": probe_rank[id(r)]} for r in (gaps[0], gaps[-1]) if r["rank"] != probe_rank[id(r)]]
        if len(rows) > 2
        else []
    )
    out["scores_vs_probes"] = {
        "score_seconds": timing["score_seconds"],
        "selection_seconds": timing["selection_seconds"],
        "probe_seconds": timing["probe_seconds"],
    }
    return out


def _ident(r: dict) -> dict:
    return {"checkpoint": r["checkpoint"], "layer": r["layer"], "pooling": r["pooling"]}


# ---- the recommendation ---------------------------------------------------------------------------
def recommend(rows: list[dict], task: str = "single_label") -> dict:
    """The best row by LogME as recipe settings: ``model.feature_layer`` (null for the last layer), ``model.pooling``,
    frozen features with the logreg probe (a linear head for multi-label and regression data); against the same
    checkpoint's last layer with the same pooling."""
    best = rows[0]
    last = next(
        (r for r in rows if r["checkpoint"] == best["checkpoint"] and r["pooling"] == best["pooling"] and r["layer"] == r["num_layers"]),
        None,
    )
    layer = None if best["layer"] == best["num_layers"] else best["layer"]
    overrides = [
        f"model.name_or_path={best['checkpoint']}",
        f"model.feature_layer={'null' if layer is None else layer}",
        f"model.pooling={best['pooling']}",
        "transfer.mode=feature_extraction",
        f"model.head={'logreg' if task == 'single_label' else 'linear'}",
    ]
    return {
        **_ident(best),
        "num_layers": best["num_layers"],
        "feature_layer": layer,
        PRIMARY: best[PRIMARY],
        "last_layer_" + PRIMARY: last[PRIMARY] if last else None,
        "overrides": overrides,
    }


def recipe_for(rec: dict, cfg: RecipeConfig) -> RecipeConfig:
    """``cfg`` with the recommendation's overrides, named after it, writing to runs/<name>."""
    name = f"select-{Path(rec['checkpoint']).name}-layer{rec['layer']}-{rec['pooling']}"
    other = [] if rec["checkpoint"] == cfg.model.name_or_path else ["model.gguf_file=null"]
    return cfg.replace(*rec["overrides"], *other, f"name={name}", f"output.dir=runs/{name}")


# ---- outputs ------------------------------------------------------------------------------------------
def _fmt(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def ranking_table(sel: Selection, top: int | None = None) -> str:
    sample, validation, rows = sel.sample, sel.validation, sel.rows
    lines = [
        f"Data: `{Path(sel.source).name if os.sep in sel.source else sel.source}` ({sample['task']}), scored on "
        f"{sample['train']:,} of {sample['train_split']:,} training examples"
        + (
            f"; probes fitted on them, C picked on {sample['validation']:,} validation examples, scored on {sample['test']:,} test examples"
            if validation
            else ""
        )
        + ".",
        "",
    ]
    head = ["rank", "checkpoint", "layer", "pooling"] + [ESTIMATOR_NAMES[e] for e in sel.estimators]
    if validation:
        head.append(f"probe test {validation['metric']}")
    lines += ["| " + " | ".join(head) + " |", "|" + "---:|" + "---|---:|---|" + "---:|" * (len(head) - 4)]
    for r in rows[: top or len(rows)]:
        cells = [str(r["rank"]), r["checkpoint"], f"{r['layer']}/{r['num_layers']}", r["pooling"]]
        cells += [_fmt(r.get(e)) for e in sel.estimators]
        if validation:
            cells.append(_fmt(r["probe"]["score"]))
        lines.append("| " + " | ".join(cells) + " |")
    if top and top < len(rows):
        lines.append(f"\n({len(rows) - top} more rows in ranking.md and ranking.json.)")
    lines += ["", _recommendation_line(sel.recommendation)]
    if validation:
        lines += ["", _validation_lines(validation)]
    lines += ["", _timing_line(sel.timing, sel.candidates)]
    return "\n".join(lines)


def _recommendation_line(rec: dict) -> str:
    last = rec.get("last_layer_" + PRIMARY)
    vs = "" if rec["feature_layer"] is None or last is None else f"; its last layer: {last:.4f}"
    return (
        f"Recommended: **{rec['checkpoint']}, layer {rec['layer']} of {rec['num_layers']}, {rec['pooling']} pooling** "
        f"(LogME {rec[PRIMARY]:.4f}{vs})."
    )


def _validation_lines(v: dict) -> str:
    def corr(c: dict) -> str:
        return ", ".join(f"{ESTIMATOR_NAMES[e]} τ {x['kendall_tau']:.2f} / ρ {x['spearman_rho']:.2f}" for e, x in c.items())

    b = v["best_by_probe"]
    picks = "; ".join(
        f"{ESTIMATOR_NAMES[e]} picks {p['checkpoint']} layer {p['layer']} {p['pooling']} "
        f"({p['probe_score']:.4f}, {p['regret'] * 100:.1f} points below)"
        if p["regret"] > 0
        else f"{ESTIMATOR_NAMES[e]} picks it too"
        for e, p in v["picks"].items()
    )
    within = "; ".join(f"{name}: {corr(c)}" for name, c in v["per_checkpoint"].items())
    wrong = "; ".join(
        f"{m['checkpoint']} layer {m['layer']} {m['pooling']} is LogME's #{m['rank']} but the probe's #{m['probe_rank']}"
        for m in v["misranked"]
    )
    s = v["scores_vs_probes"]
    return (
        f"Rank correlation with the probe's test {v['metric']}, all rows: {corr(v['correlations'])}. "
        + (f"Within one checkpoint: {within}. " if within else "")
        + f"The probe's best: {b['checkpoint']} layer {b['layer']} {b['pooling']} ({v['best_probe_score']:.4f}); {picks}. "
        + (f"Most misranked by LogME: {wrong}. " if wrong else "")
        + f"Scoring took {s['selection_seconds']:.1f}s (encoding included; the estimators alone {s['score_seconds']:.2f}s), "
        f"the probes {s['probe_seconds']:.1f}s more (held-out encoding and fits)."
    )


def _timing_line(t: dict, cands: list[dict]) -> str:
    each = ", ".join(
        f"{c['checkpoint']} {c['encode_seconds'] + c['score_seconds']:.1f}s" + (" (features from the cache)" if c["from_cache"] else "")
        for c in cands
    )
    s = (
        f"Selection time: {t['selection_seconds']:.1f}s ({each}; encoding {t['encode_seconds']:.1f}s, estimators "
        f"{t['score_seconds']:.2f}s; loading the checkpoints {t['load_seconds']:.1f}s more)."
    )
    ref = t.get("reference")
    if ref:
        shares = ", ".join(f"{c['checkpoint']} {(c['encode_seconds'] + c['score_seconds']) / ref['seconds'] * 100:.1f}%" for c in cands)
        s += (
            f" That is {ref['selection_share'] * 100:.1f}% of the reference run `{ref['run']}` "
            f"({ref['seconds']:.0f}s; {shares}; {ref['with_loading_share'] * 100:.1f}% with loading)."
        )
    return s


def _write(out: Path, sel: Selection, cfg: RecipeConfig, base_recipe: str | None) -> dict[str, Path]:
    """ranking.json, ranking.md, recipe.yaml (and recipe-last-layer.yaml: the same on the last layer, to check
    the recommendation against) and a plot per checkpoint; each file written whole or not at all."""
    import tempfile

    from nlp_transfer.reporting.plots import plot_layer_scores

    rec = sel.recommendation
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "ranking.json", "table": out / "ranking.md", "recipe": out / "recipe.yaml"}
    recipes = {"recipe": recipe_for(rec, cfg)}
    if rec["feature_layer"] is not None:
        files["recipe_last_layer"] = out / "recipe-last-layer.yaml"
        recipes["recipe_last_layer"] = recipe_for(
            {
                **rec,
                "feature_layer": None,
                "layer": rec["num_layers"],
                "overrides": [o if not o.startswith("model.feature_layer=") else "model.feature_layer=null" for o in rec["overrides"]],
            },
            cfg,
        )
    rec["recipe"], rec["base_recipe"] = str(files["recipe"]), base_recipe
    plots = {}
    with tempfile.TemporaryDirectory(dir=out, prefix=".plots-") as tmp:
        for c in sel.candidates:
            name = c["checkpoint"]
            stem = f"layers-{Path(name).name}.png"
            png = plot_layer_scores(
                [r for r in sel.rows if r["checkpoint"] == name], sel.estimators, Path(tmp) / stem, f"{name}: score by layer"
            )
            if png is not None:
                os.replace(png, out / stem)
                plots[name] = out / stem
    images = "\n".join(f"![{name}: score by layer]({p.name})" for name, p in plots.items())
    payload = {
        "data": sel.source,
        "sample": sel.sample,
        "estimators": sel.estimators,
        "candidates": sel.candidates,
        "rows": sel.rows,
        "recommendation": rec,
        "validation": sel.validation,
        "timing": sel.timing,
    }
    atomic_write(files["json"], json.dumps(payload, indent=2))
    for key, recipe in recipes.items():
        atomic_write(
            files[key],
            f"# Written by nlp-transfer select: {recipe.model.name_or_path}, layer "
            f"{recipe.model.feature_layer or 'last'}, {recipe.model.pooling} pooling.\n# Train it: "
            f"accelerate launch -m nlp_transfer train --config {files[key]}\n" + recipe.to_yaml(),
        )
    atomic_write(files["table"], sel.table() + ("\n\n" + images if images else "") + "\n")
    files.update({f"plot:{k}": v for k, v in plots.items()})
    return files
