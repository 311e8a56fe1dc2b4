"""Pool-based active learning: which texts to label next, with a person in the loop or simulated.

    # a person labels: each call reads the filled-in batch, refits and writes the next one
    label_pool("rotten_tomatoes/minilm-logreg", "reviews.csv", "al/", strategy="breaking_ties", batch=32, rounds=8)
    # simulated on a labelled dataset: the pool's labels revealed only when queried
    result = simulate("rotten_tomatoes/minilm-logreg", ["random", "breaking_ties"], batch=32, rounds=16, seeds=3, out="al-sim")

The model in the loop is the recipe's checkpoint, frozen: every pool text is encoded once (through the
feature cache, so a second call or a later training run reads the vectors from disk) and a logistic
regression on the labelled texts' features scores the rest, in seconds a round. Strategies:
:mod:`nlp_transfer.experiments.strategies`. While nothing is labelled, or fewer than two classes, the
uncertainty strategies draw at random (``kmeans`` and ``coreset`` need no model).

A person's loop keeps its state in ``DIR/state.json``; round K writes ``DIR/round-K/to_label.csv`` (id,
text, the model's guess and its probability, an empty ``label`` column). The next call reads the labels
given (in that file, ``round-K/labels.csv`` / ``labels.jsonl`` with id and label, or a Label Studio JSON
export ``labels.json``; blanks stay unlabelled and may be asked again), refits and writes round K+1. The recipe's
labelled training examples, if any, seed the loop unless ``use_seed=False``; ``model="setfit"`` refits SetFit
(:mod:`nlp_transfer.experiments.active_setfit`) instead of the logistic regression. Every file is written whole (a temporary
file renamed), and a round's picks depend only on the labels so far and the seed, so a call killed at
any point is repeated by the same command with the same result.

Simulation keeps each (strategy, seed) curve in ``<out>/<strategy>/seed-<k>.json``, rewritten after
every round, so an interrupted simulation resumes where it stopped; its table and plot follow
:mod:`nlp_transfer.experiments.curve`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nlp_transfer.errors import ConfigError, DataError
from nlp_transfer.experiments.strategies import NEEDS_MODEL, check_strategy, kappa_average, query
from nlp_transfer.utils.paths import atomic_write

logger = logging.getLogger("nlp_transfer")
STOP_SET = 1000  # pool texts whose predictions the stopping criterion compares between rounds
DEFAULT_C = 1.0  # the loop's logistic regression (standardised features), unless the recipe sets model.logreg_c


# ---- the oracle of a simulation ----------------------------------------------------------------------
class Oracle:
    """The pool's hidden labels, revealed only by :meth:`query`, which records every row it was asked."""

    def __init__(self, labels):
        self._labels = labels
        self.queried: list[list[int]] = []  # one list of rows per query, in order

    def __len__(self) -> int:
        return len(self._labels)

    def query(self, rows) -> np.ndarray:
        rows = [int(r) for r in rows]
        self.queried.append(rows)
        return np.asarray([self._labels[r] for r in rows], dtype=np.int64)


# ---- features and the model in the loop --------------------------------------------------------------
def encode_texts(cfg, splits: dict[str, list[str]], progress: bool = False) -> dict[str, np.ndarray]:
    """{split: pooled features [N, H]} of the recipe's checkpoint, frozen, through the feature cache
    (the same vectors a ``feature_extraction`` run of the recipe reads)."""
    import datasets
    import torch
    from accelerate import Accelerator

    from nlp_transfer.data.batching import PadCollator, tokenize
    from nlp_transfer.data.chunking import LongTextSpec, aggregate
    from nlp_transfer.recipes import build_classifier
    from nlp_transfer.training.precision import allow_precision_change, check_precision, resolve_precision, set_threads
    from nlp_transfer.transfer.caches import cached_features

    precision = resolve_precision(cfg.train.mixed_precision)
    check_precision(precision)
    allow_precision_change(precision)
    accelerator = Accelerator(mixed_precision=precision)
    set_threads(cfg.train.num_threads)
    model, tokenizer = build_classifier(cfg, ["a", "b"])  # the head is not used: only the pooled features
    model.eval()
    spec = LongTextSpec.from_config(cfg.model)
    tokens = {}
    for split, texts in splits.items():  # no labels: the encoder never sees them
        raw = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts, "label": [0] * len(texts)})})
        tokens[split] = tokenize(raw, tokenizer, cfg.model.max_length, spec)["train"]
    model.to(accelerator.device)
    feats, _ = cached_features(
        model,
        tokens,
        tokenizer,
        PadCollator(tokenizer),
        cfg.train.eval_batch_size,
        accelerator,
        pooling=model.pooling,
        max_length=cfg.model.max_length,
        precision=accelerator.mixed_precision,
        cache_dir=cfg.transfer.cache_dir,
        use_disk=cfg.transfer.cache_features,
        log=logger.info,
        progress=progress,
        layer=model.meta.get("feature_layer"),
    )
    out = {}
    for split, ds in feats.items():
        x = ds.features.float()
        if ds.doc_ids is not None:  # windows of long texts: their mean, one row per text
            x = aggregate(x, ds.doc_ids, "mean")[1]
        out[split] = x.numpy().astype(np.float64)
    del model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out


def fit_probs(x_lab: np.ndarray, y_lab: np.ndarray, num_labels: int, C: float, seed: int, *evaluate: np.ndarray):
    """A logistic regression on the labelled features; the class probabilities of each array of ``evaluate``
    (None each while fewer than two classes are labelled)."""
    from nlp_transfer.transfer.probe import fit_logreg

    if len(np.unique(y_lab)) < 2:
        return [None for _ in evaluate]
    w, b = fit_logreg(x_lab, y_lab, num_labels, C, seed)
    out = []
    for x in evaluate:
        z = x @ w.T + b
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        out.append(p / p.sum(1, keepdims=True))
    return out


def pick(strategy: str, n: int, probs, emb: np.ndarray, labelled: np.ndarray, seed: int, round_: int) -> np.ndarray:
    """Round ``round_``'s ``n`` rows (most wanted first); uncertainty strategies without a model draw at random."""
    unlabelled = np.setdiff1d(np.arange(len(emb)), labelled)
    name = "random" if strategy in NEEDS_MODEL and probs is None else strategy
    return query(name, n, probs=probs, embeddings=emb, labelled=labelled, unlabelled=unlabelled, seed=seed * 1000 + round_)


def stop_rows(n: int, seed: int = 0) -> np.ndarray:
    """The fixed stop set: up to :data:`STOP_SET` pool rows (predictions only, never labels)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n)[:STOP_SET])


def quiet_datasets(progress: bool) -> None:
    """No datasets progress bars unless wanted on a terminal (in a log file they write a line per update)."""
    import datasets

    from nlp_transfer.utils.progress import interactive

    if not (progress and interactive()):
        datasets.disable_progress_bars()


def loop_c(cfg) -> float:
    return cfg.model.logreg_c if getattr(cfg.model, "logreg_c", None) else DEFAULT_C


# ---- simulation --------------------------------------------------------------------------------------
@dataclass
class ActiveCurve:
    points: list[dict]  # one per (strategy, seed, round)
    summary: list[dict]  # one per (strategy, labels): mean and std over seeds
    table: str
    files: dict[str, Path] = field(default_factory=dict)


def simulate_one(
    strategy: str,
    pool: np.ndarray,
    oracle: Oracle,
    test: np.ndarray,
    y_test: np.ndarray,
    labels: list[str],
    *,
    batch: int,
    rounds: int,
    seed: int,
    C: float,
    state_file: Path | None = None,
    key: str = "",
) -> list[dict]:
    """One strategy, one seed: ``rounds`` batches queried from ``oracle`` (the only source of pool labels);
    after each, the test accuracy and macro F1 of the refit model and the stopping criterion. Rounds in
    ``state_file`` are replayed (their rows queried again), and the file is rewritten after each new round."""
    from nlp_transfer.metrics import compute_metrics

    saved = json.loads(state_file.read_text()) if state_file is not None and state_file.is_file() else {}
    done = saved.get("rounds", []) if saved.get("key") == key else []  # other settings: start again
    stop = stop_rows(len(pool))
    labelled, y, points = np.zeros(0, np.int64), np.zeros(0, np.int64), []
    probs = None  # the current model's pool probabilities, while they match the labels so far
    for r in range(rounds):
        t0 = time.perf_counter()
        if r < len(done):
            rows = np.asarray(done[r]["picked"], dtype=np.int64)
        else:
            if probs is None and strategy in NEEDS_MODEL and len(labelled):
                probs = fit_probs(pool[labelled], y, len(labels), C, seed, pool)[0]
            rows = pick(strategy, batch, probs, pool, labelled, seed, r)
        if len(rows) == 0:
            break
        labelled, y = np.concatenate([labelled, rows]), np.concatenate([y, oracle.query(rows)])
        probs = None
        if r < len(done):
            points.append(done[r])
            continue
        probs, p_test = fit_probs(pool[labelled], y, len(labels), C, seed, pool, test)
        pred = p_test.argmax(1) if p_test is not None else np.full(len(y_test), np.bincount(y).argmax())
        m = compute_metrics(y_test, pred, label_names=labels)
        point = {"strategy": strategy, "seed": seed, "round": r + 1, "labels": int(len(labelled)), "picked": rows.tolist()}
        point.update(accuracy=m["accuracy"], f1_macro=m["f1_macro"])
        point["stop_predictions"] = (probs[stop].argmax(1) if probs is not None else np.zeros(len(stop), np.int64)).tolist()
        point["kappa"] = kappa_average([p["stop_predictions"] for p in points] + [point["stop_predictions"]])
        point["seconds"] = round(time.perf_counter() - t0, 3)
        points.append(point)
        if state_file is not None:
            atomic_write(state_file, json.dumps({"key": key, "rounds": points}))
        kappa = "-" if point["kappa"] is None else f"{point['kappa']:.3f}"
        logger.info(
            f"{strategy}, seed {seed}, round {r + 1}: {len(labelled)} labels, accuracy {point['accuracy']:.4f}, kappa average {kappa}"
        )
    return points


def simulate(
    recipe,
    strategies: list[str],
    *,
    batch: int,
    rounds: int,
    seeds: int,
    out: str | Path,
    overrides: list[str] = (),
    progress: bool = False,
) -> ActiveCurve:
    """Every strategy with ``seeds`` seeds on the recipe's data: its training split is the pool (labels behind an
    :class:`Oracle`), its test split scores each round's model; resumes finished rounds from ``out``."""
    from nlp_transfer.data.loading import load_data
    from nlp_transfer.experiments.compare import load_recipes
    from nlp_transfer.experiments.curve import _recipe_key

    for s in strategies:
        check_strategy(s)
    if batch < 1 or rounds < 1 or seeds < 1:
        raise ConfigError("--batch, --rounds and --seeds must be at least 1")
    cfg = load_recipes([recipe], list(overrides))[0]
    quiet_datasets(progress)
    data = load_data(cfg.data)
    if data.task != "single_label":
        raise ConfigError(f"active learning here needs single-label data, not {data.task}")
    train, test = data.splits["train"], data.splits["test"]
    feats = encode_texts(cfg, {"train": list(train["text"]), "test": list(test["text"])}, progress)
    hidden, y_test = list(train["label"]), np.asarray(test["label"], dtype=np.int64)
    C = loop_c(cfg)
    key = hashlib.sha256(json.dumps([_recipe_key(cfg), batch, C]).encode()).hexdigest()[:16]
    out = Path(out)
    points = []
    for s in ["random"] + [s for s in strategies if s != "random"]:
        for seed in range(seeds):
            oracle = Oracle(hidden)
            state = out / s / f"seed-{seed}.json"
            points += simulate_one(
                s,
                feats["train"],
                oracle,
                feats["test"],
                y_test,
                data.labels,
                batch=batch,
                rounds=rounds,
                seed=seed,
                C=C,
                state_file=state,
                key=key,
            )
    summary = summarize(points)
    table = active_table(summary, data, cfg, batch)
    return ActiveCurve(points, summary, table, write_active(points, summary, table, out, cfg))


def summarize(points: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds per (strategy, labels), in ``curve``'s form (``method``, ``per_class``
    holding the number of labels) so its plot draws them; per strategy its area under the accuracy curve (the
    mean accuracy over rounds)."""
    from nlp_transfer.experiments.curve import _mean_std

    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault((p["strategy"], p["labels"]), []).append(p)
    rows = []
    for (strategy, n), ps in groups.items():
        acc, acc_sd = _mean_std([p["accuracy"] for p in ps])
        f1, f1_sd = _mean_std([p["f1_macro"] for p in ps])
        kappas = [p["kappa"] for p in ps if p.get("kappa") is not None]
        row = {"method": strategy, "per_class": n, "train_size": n, "seeds": len(ps), "accuracy": acc, "accuracy_std": acc_sd}
        row.update(f1_macro=f1, f1_macro_std=f1_sd, kappa=float(np.mean(kappas)) if kappas else None)
        row["seconds"] = sum(p["seconds"] for p in ps) / len(ps)
        rows.append(row)
    for strategy in {r["method"] for r in rows}:
        mine = [r for r in rows if r["method"] == strategy]
        for metric in ("accuracy", "f1_macro"):
            auc = float(np.mean([r[metric] for r in mine]))
            for r in mine:
                r[f"auc_{metric}"] = auc
    return rows


def labels_to_reach(summary: list[dict], strategy: str, target: float) -> int | None:
    """The fewest labels at which ``strategy``'s mean accuracy reaches ``target`` (None: never)."""
    mine = sorted((r for r in summary if r["method"] == strategy), key=lambda r: r["per_class"])
    return next((r["per_class"] for r in mine if r["accuracy"] >= target - 1e-12), None)


def shown_sizes(sizes: list[int], batch: int) -> list[int]:
    """The label counts the table shows: each doubling from the first batch, and the last."""
    keep, n = [], batch
    while n <= sizes[-1]:
        if n in sizes:
            keep.append(n)
        n *= 2
    return sorted(set(keep + [sizes[-1]]))


def active_table(summary: list[dict], data=None, cfg=None, batch: int | None = None) -> str:
    """Markdown: per strategy, mean ± std test accuracy (then macro F1) at doubling label counts, the area under
    the curve (mean over every round) and the labels at which it reaches random's accuracy at the most labels."""
    sizes = sorted({r["per_class"] for r in summary})
    shown = shown_sizes(sizes, batch or sizes[0])
    strategies = list(dict.fromkeys(r["method"] for r in summary))
    cell = {(r["method"], r["per_class"]): r for r in summary}
    top = sizes[-1]
    target = cell.get(("random", top), {}).get("accuracy")
    lines = []
    if data is not None and cfg is not None:
        sz = data.sizes()
        lines += [
            f"Pool: the training split of `{cfg.data.source or cfg.data.train_file}` ({sz['train']:,} texts, {len(data.labels)} "
            f"classes), labels revealed only when queried; scored on its test split ({sz['test']:,}). Frozen `{cfg.model.name_or_path}` "
            f"features ({cfg.model.pooling} pooling) + logistic regression, refit each round; {len(sizes)} rounds of {sizes[0]}. "
            "Mean ± standard deviation over seeds (their number in brackets); AUC: the mean over all rounds.",
            "",
        ]
    for metric, title in (("accuracy", "test accuracy"), ("f1_macro", "test macro F1")):
        reach = f" | labels to reach random's {top} |" if metric == "accuracy" and target is not None else " |"
        lines += [
            f"| {title}, labels | " + " | ".join(map(str, shown)) + f" | AUC{reach}",
            "|---|" + "---:|" * (len(shown) + 1 + (reach != " |")),
        ]
        for s in strategies:
            row = [
                "" if (s, n) not in cell else f"{cell[s, n][metric]:.3f} ± {cell[s, n][metric + '_std']:.3f} ({cell[s, n]['seeds']})"
                for n in shown
            ]
            auc = next(r[f"auc_{metric}"] for r in summary if r["method"] == s)
            extra = ""
            if reach != " |":
                n = labels_to_reach(summary, s, target)
                extra = f" | {'not within ' + str(top) if n is None else n}"
            lines.append(f"| {s} | " + " | ".join(row) + f" | {auc:.4f}{extra} |")
        lines.append("")
    lines.append(_stop_line(summary, top))
    return "\n".join(lines).rstrip()


def _stop_line(summary: list[dict], top: int) -> str:
    """Where the stopping criterion (mean kappa average over seeds) first reaches 0.99, per strategy."""
    from nlp_transfer.experiments.strategies import KAPPA_STOP

    met, best = [], None
    for s in dict.fromkeys(r["method"] for r in summary):
        mine = sorted((r for r in summary if r["method"] == s and r.get("kappa") is not None), key=lambda r: r["per_class"])
        first = next((r["per_class"] for r in mine if r["kappa"] >= KAPPA_STOP), None)
        if first is not None:
            met.append(f"{s} at {first}")
        for r in mine:
            best = r if best is None or r["kappa"] > best["kappa"] else best
    head = f"Stopping criterion (kappa average of the stop-set predictions over 3 rounds, mean over seeds, ≥ {KAPPA_STOP}): "
    if met:
        return head + "met by " + ", ".join(met) + f" labels; not by the others within {top}."
    if best is None:
        return head + "too few rounds to compute."
    return head + f"not met within {top} labels (highest: {best['kappa']:.3f}, {best['method']} at {best['per_class']})."


def write_active(points: list[dict], summary: list[dict], table: str, out: Path, cfg=None) -> dict[str, Path]:
    from nlp_transfer.experiments.compare import write_results
    from nlp_transfer.reporting.plots import plot_curve

    slim = [{k: v for k, v in p.items() if k != "stop_predictions"} for p in points]
    return write_results(
        out,
        "active",
        table,
        {"points": slim, "summary": summary},
        cfg,
        "test accuracy against labels queried",
        lambda path, title: plot_curve(summary, path, title, xlabel="labelled examples (log)"),
        alt="active learning curves",
    )


# ---- a person in the loop ----------------------------------------------------------------------------
ANSWER_FILES = ("labels.json", "labels.jsonl", "labels.csv", "to_label.csv")  # where a round's labels are read, first found


def read_pool(path: str | Path, text_column: str = "text", id_column: str = "id") -> tuple[list[str], list[str]]:
    """(ids, texts) of a CSV, TSV or JSONL pool; without an id column, the row number (from 1) is the id."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"pool file '{p}' not found")
    if p.suffix in (".jsonl", ".json"):
        rows = []
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise DataError(f"{p} line {i} is not JSON; write one object per line with '{text_column}'") from None
    else:
        with open(p, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if p.suffix == ".tsv" else ","))
    if not rows or text_column not in rows[0]:
        raise DataError(f"pool file '{p}' has no '{text_column}' column (or no rows); name the column with --text-column")
    ids = [str(r[id_column]) if id_column in r else str(i) for i, r in enumerate(rows, 1)]
    seen = set()
    for i, d in enumerate(ids):
        if d in seen:
            raise DataError(f"pool file '{p}': id '{d}' appears twice (row {i + 1}); every pool text needs its own id")
        seen.add(d)
    return ids, [str(r[text_column]) for r in rows]


def _answer_rows(path: Path) -> list[tuple[str, str, str]]:
    """(where, id, label) of every row with a label in a CSV or JSONL answers file, or a Label Studio JSON export."""
    if path.suffix == ".json":
        from nlp_transfer.experiments.label_studio import read_export

        return read_export(path)
    out = []
    if path.suffix == ".jsonl":
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{path} line {i} is not JSON; write one object per line with id and label") from None
            if not isinstance(r, dict) or "id" not in r:
                raise DataError(f"{path} line {i} has no id; write one object per line with id and label")
            if r.get("label") not in (None, ""):
                out.append((f"line {i}", str(r["id"]), str(r["label"])))
        return out
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "id" not in reader.fieldnames or "label" not in reader.fieldnames:
            raise DataError(f"{path} needs the columns id and label (it has {', '.join(reader.fieldnames or []) or 'none'})")
        for i, r in enumerate(reader, 2):
            if (r.get("label") or "").strip():
                out.append((f"line {i}", str(r["id"]), r["label"].strip()))
    return out


def read_answers(round_dir: Path, asked: list[str], names: list[str]) -> tuple[dict[str, str], Path]:
    """{id: label} given for a round (a partly filled file is fine); a label outside ``names``, an id given twice or
    one not asked in this round is a :class:`DataError` naming the file and line."""
    path = next((round_dir / f for f in ANSWER_FILES if (round_dir / f).is_file()), None)
    if path is None and (round_dir / "to_label.json").is_file():
        raise DataError(
            f"no labels for {round_dir.name} yet: import {round_dir / 'to_label.json'} into Label Studio, label it, export the "
            f"project as JSON to {round_dir / 'labels.json'} and run the same command again"
        )
    if path is None:
        raise DataError(f"{round_dir / 'to_label.csv'} is missing; run the same command without changes to write it again")
    answers: dict[str, str] = {}
    problems = []
    asked_set = set(asked)
    for line, id_, label in _answer_rows(path):
        if id_ not in asked_set:
            problems.append(f"{line}: id '{id_}' was not asked in {round_dir.name}")
        elif id_ in answers:
            problems.append(f"{line}: id '{id_}' is labelled twice")
        elif label not in names:
            problems.append(f"{line}: label '{label}' is not one of {', '.join(names)}")
        else:
            answers[id_] = label
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DataError(f"{path}: {problems[0]}{more}; fix the file and run the same command again")
    if not answers:
        raise DataError(f"no labels in {path} yet: fill in its label column ({', '.join(names)}) and run the same command again")
    return answers, path


def _write_batch(path: Path, ids: list[str], texts: list[str], rows: np.ndarray, probs, names: list[str]) -> None:
    """``to_label.csv``, or with a ``.json`` path the tasks of Label Studio's format (the guess as a prediction)."""
    import io

    if path.suffix == ".json":
        from nlp_transfer.experiments.label_studio import to_tasks

        guesses = [None if probs is None else names[int(probs[r].argmax())] for r in rows]
        scores = [None if probs is None else float(probs[r].max()) for r in rows]
        tasks = to_tasks([ids[r] for r in rows], [texts[r] for r in rows], guesses, scores, path.parent.name)
        atomic_write(path, json.dumps(tasks, indent=1, ensure_ascii=False))
        return

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "text", "guess", "score", "label"])
    for r in rows:
        guess, score = ("", "") if probs is None else (names[int(probs[r].argmax())], f"{float(probs[r].max()):.4f}")
        w.writerow([ids[r], texts[r], guess, score, ""])
    atomic_write(path, buf.getvalue())


@dataclass
class LabelRound:
    """What one call of :func:`label_pool` did."""

    round: int  # the round whose batch is now waiting (0: none)
    labelled: int  # labels so far
    read: int  # labels read in this call
    to_label: Path | None  # the batch written (None once finished)
    kappa: float | None
    finished: bool
    run: Path | None = None  # the run trained on the labels (train=True, once finished)


def _settings(cfg, ids, texts, strategy, batch, names, seed, seeded: int, model: str) -> dict:
    from nlp_transfer.experiments.curve import _recipe_key

    pool = hashlib.sha256(json.dumps([ids, texts]).encode()).hexdigest()[:16]
    settings = {"recipe": _recipe_key(cfg), "pool": pool, "strategy": strategy, "batch": batch, "labels": names, "seed": seed}
    return {**settings, "seeded": seeded, "model": model}


SETTING_NAMES = {
    "recipe": "recipe",
    "pool": "pool file",
    "labels": "label set",
    "seeded": "seed set (the recipe's labelled examples, or none with --no-seed)",
}
SETTING_DEFAULTS = {"seeded": 0, "model": "logreg"}  # what a state written before these settings existed used


def _load_state(out: Path, settings: dict, rounds: int, seed: dict) -> dict:
    path = out / "state.json"
    if not path.is_file():
        return {"settings": settings, "rounds": rounds, "asked": [], "read": 0, "answers": {}, "stop_predictions": [], "kappa": [], **seed}
    state = json.loads(path.read_text())
    for k, v in settings.items():
        if state["settings"].get(k, SETTING_DEFAULTS.get(k)) != v:
            what = SETTING_NAMES.get(k, f"--{k}")
            raise ConfigError(f"{out} was started with another {what}; run it with the same settings, or choose a new --out")
    state["rounds"] = rounds  # more (or fewer) rounds may be asked for later
    return state


def label_pool(
    recipe,
    pool_file: str | Path,
    out: str | Path,
    *,
    strategy: str,
    batch: int,
    rounds: int,
    labels: list[str] | None = None,
    seed: int = 0,
    overrides: list[str] = (),
    text_column: str = "text",
    id_column: str = "id",
    train: bool = False,
    use_seed: bool = True,
    model: str = "logreg",
    output_format: str = "csv",
    progress: bool = False,
) -> LabelRound:
    """One step of the loop: read the labels given for the waiting round, refit, write the next batch (or, once
    ``rounds`` rounds are answered, train the recipe on every label with ``train``). With ``use_seed``, the recipe's
    labelled training examples (when its data has them) seed the loop: the first model is fitted on them. ``model``:
    ``logreg`` (frozen features) or ``setfit`` (SetFit refit on the labels so far). ``output_format``: ``csv``
    (``to_label.csv``) or ``label-studio`` (``to_label.json``, Label Studio tasks)."""
    from nlp_transfer.experiments.compare import load_recipes

    check_strategy(strategy)
    if batch < 1 or rounds < 1:
        raise ConfigError("--batch and --rounds must be at least 1")
    if output_format not in ("csv", "label-studio"):
        raise ConfigError(f"--format {output_format} is not one of csv, label-studio")
    if model not in LOOP_MODELS:
        raise ConfigError(f"--model {model} is not one of {', '.join(LOOP_MODELS)}")
    if model == "setfit":
        from nlp_transfer.experiments.active_setfit import require_setfit

        require_setfit()
    cfg = load_recipes([recipe], list(overrides))[0]
    quiet_datasets(progress)
    ids, texts = read_pool(pool_file, text_column, id_column)
    names, seed_set = _label_set(cfg, labels, use_seed)
    if len(set(names)) != len(names) or len(names) < 2:
        raise ConfigError(f"the label set needs two or more distinct labels, not {', '.join(names)}")
    out = Path(out)
    seed_info = {"seed_set": {"examples": len(seed_set[0]), "per_label": {n: seed_set[1].count(i) for i, n in enumerate(names)}}}
    state = _load_state(out, _settings(cfg, ids, texts, strategy, batch, names, seed, len(seed_set[0]), model), rounds, seed_info)
    read = 0
    if len(state["asked"]) > state["read"]:  # a batch is waiting: its labels first
        k = len(state["asked"])
        answers, path = read_answers(out / f"round-{k}", state["asked"][-1], names)
        state["answers"].update(answers)
        state["read"], read = k, len(answers)
        atomic_write(out / "state.json", json.dumps(state, indent=1))
        logger.info(f"{read} labels read from {path} ({len(state['answers'])} in all)")
    kappa = state["kappa"][-1] if state["kappa"] else None
    row = {d: i for i, d in enumerate(ids)}
    labelled = np.asarray([row[d] for d in state["answers"]], dtype=np.int64)
    if state["read"] >= rounds or len(labelled) == len(ids):
        run = _train_on_answers(cfg, state, ids, texts, names, seed_set, out, progress) if train else None
        return LabelRound(state["read"], len(labelled), read, None, kappa, True, run)
    if train:
        logger.info(f"--train trains once all {rounds} rounds are labelled ({state['read']} so far)")
    y = np.asarray([names.index(state["answers"][ids[r]]) for r in labelled], dtype=np.int64)
    emb, known, y, probs = _round_model(cfg, model, texts, labelled, y, seed_set, len(names), seed, progress)
    k = len(state["asked"]) + 1
    rows = pick(strategy, batch, probs, emb, known, seed, k - 1)  # the seed set's rows count as labelled: never picked
    target = out / f"round-{k}" / ("to_label.json" if output_format == "label-studio" else "to_label.csv")
    _write_batch(target, ids, texts, rows, probs, names)
    if probs is not None:  # the stopping criterion: how much the model's predictions on the stop set still change
        state["stop_predictions"].append(probs[stop_rows(len(ids))].argmax(1).tolist())
        state["kappa"].append(kappa_average(state["stop_predictions"]))
        kappa = state["kappa"][-1]
    state["asked"].append([ids[r] for r in rows])
    atomic_write(out / "state.json", json.dumps(state, indent=1))
    return LabelRound(k, len(labelled), read, target, kappa, False)


LOOP_MODELS = ("logreg", "setfit")


def _round_model(cfg, model: str, texts, labelled, y, seed_set, num_labels: int, seed: int, progress: bool):
    """(embeddings of the pool then the seed set, the labelled rows of them, their labels, the model's probabilities
    for every row or None) for this round: the pool's labels so far and the seed set."""
    seed_texts, seed_y = seed_set
    feats = encode_texts(cfg, {"pool": texts, **({"seed": seed_texts} if seed_texts else {})}, progress)
    emb = np.concatenate([feats["pool"], feats["seed"]]) if seed_texts else feats["pool"]
    known = np.concatenate([labelled, np.arange(len(texts), len(emb), dtype=np.int64)])
    y = np.concatenate([y, np.asarray(seed_y, dtype=np.int64)])
    if not len(known):
        return emb, known, y, None
    if model == "logreg":
        return emb, known, y, fit_probs(emb[known], y, num_labels, loop_c(cfg), seed, emb)[0]
    from nlp_transfer.experiments.active_setfit import setfit_probs

    all_texts = list(texts) + list(seed_texts)
    probs = setfit_probs(cfg, [all_texts[r] for r in known], y, num_labels, seed, list(texts))
    if probs is not None and seed_texts:  # the seed set is labelled and never asked: no need to score it
        probs = np.concatenate([probs, np.full((len(seed_texts), num_labels), 1.0 / num_labels)])
    return emb, known, y, probs


def _label_set(cfg, labels: list[str] | None, use_seed: bool) -> tuple[list[str], tuple[list[str], list[int]]]:
    """(the label set, (texts, label indices) of the seed set): --labels, else the recipe's data's labels; its
    labelled training examples seed the loop with ``use_seed`` (none if the data has none, or did not load and
    --labels names the label set)."""
    from nlp_transfer.data.loading import load_data

    if labels and not use_seed:
        return list(labels), ([], [])
    try:
        data = load_data(cfg.data)
    except DataError as e:
        if labels:
            logger.info(f"no seed set: the recipe's data did not load ({e})")
            return list(labels), ([], [])
        raise ConfigError(f"the label set comes from the recipe's data, which did not load ({e}); give it with --labels a,b,c") from None
    names = list(labels) if labels else list(data.labels)
    train = data.splits.get("train")
    if not use_seed or data.task != "single_label" or train is None or len(train) == 0:
        return names, ([], [])
    if names != list(data.labels):
        raise ConfigError(
            f"the recipe's labelled examples ({', '.join(data.labels)}) seed the loop, but --labels gives another label set "
            f"({', '.join(names)}); give --no-seed to start from the pool alone, or leave out --labels"
        )
    logger.info(f"seed set: {len(train)} labelled examples of the recipe's training data (--no-seed: none)")
    return names, (list(train["text"]), [int(v) for v in train["label"]])


def _train_on_answers(cfg, state: dict, ids, texts, names, seed_set, out: Path, progress: bool) -> Path:
    """The recipe trained on every label given and the seed set; validation and test from the recipe's own data
    (same label set)."""
    import datasets

    from nlp_transfer.data.loading import TextData, load_data
    from nlp_transfer.training import train

    data = load_data(cfg.data)
    if data.labels != names:
        raise ConfigError(
            f"--train validates and tests on the recipe's data, whose labels ({', '.join(data.labels)}) differ from the "
            f"label set ({', '.join(names)}); use a recipe on data with the same labels"
        )
    row = {d: i for i, d in enumerate(ids)}
    given = list(state["answers"].items())
    train_split = datasets.Dataset.from_dict(
        {
            "text": [texts[row[d]] for d, _ in given] + list(seed_set[0]),
            "label": [names.index(lab) for _, lab in given] + list(seed_set[1]),
        }
    ).cast_column("label", data.splits["validation"].features["label"])
    picked = TextData(datasets.DatasetDict({**data.splits, "train": train_split}), names, data.task)
    run_dir = out / "run"
    run_cfg = cfg.replace(f"output.dir={run_dir}", "output.overwrite=true", "data.samples_per_class=null")
    train(run_cfg, data=picked, progress=progress)
    return run_dir
