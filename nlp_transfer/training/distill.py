"""Knowledge distillation: the recipe's model (the student) learns from the outputs of trained runs (the teachers).

The transfer set is the recipe's training texts (labelled), plus optional augmented copies of them
(:mod:`nlp_transfer.data.augment`, Tang et al. 2019) and unlabelled texts (``distill.unlabelled``); only the
first have labels. Each teacher is any run :func:`~nlp_transfer.inference.predictor.load_run` loads. Its raw
logits on each part of the transfer set (training texts, augmented, unlabelled) and on the test split are
computed once and kept on disk under ``<cache>/teachers``, keyed by the teacher's fingerprint (every file of
its run directory but the reports), the part's texts and the device type; the next run reads them back, so a
run that only adds unlabelled texts computes the teachers on those alone. The training rows carry the teachers'
soft targets (:meth:`~nlp_transfer.tasks.base.Task.soft_targets`: several teachers are averaged), and
:class:`~nlp_transfer.training.objectives.Distillation` mixes the soft loss with the recipe's own.

After training, the student's test predictions are compared with the teachers': the share of test rows
where both decide the same (regression: the correlation of their values), and the share of the teachers'
test score the student keeps.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch

from nlp_transfer.data.augment import augment_texts
from nlp_transfer.data.loading import TextData, unlabelled_texts
from nlp_transfer.errors import ConfigError, ModelError
from nlp_transfer.inference.predictor import check_run_dir, load_run
from nlp_transfer.manifest import RunManifest, read_manifest
from nlp_transfer.transfer.caches import FeatureCache
from nlp_transfer.utils.paths import cache_root

TEACHER_CACHE_FORMAT = 1
# Files of a run directory that describe it and change nothing it predicts (left out of its fingerprint).
REPORT_FILES = ("metrics.json", "summary.md", "README.md", "recipe.yaml")


@dataclass
class Teacher:
    """A teacher run: where it is, what identifies its predictions, and its output columns in the student's label order."""

    path: Path
    fingerprint: str
    manifest: RunManifest
    columns: list[int]  # the teacher's logit column of each student label

    def record(self) -> dict:
        return {"path": str(self.path), "fingerprint": self.fingerprint, "name": self.manifest.name}


@dataclass
class TransferSet:
    """The training rows with their teachers' soft targets, and what the run records of them."""

    train: datasets.Dataset  # text, [text_pair], label, teacher (soft targets), labelled (1/0)
    test_logits: np.ndarray  # [K, N, C]: each teacher's logits on the test split, in the student's label order
    teachers: list[Teacher]
    record: dict = field(default_factory=dict)


def fingerprint_run(d: Path) -> str:
    """Hash of every file of run directory ``d`` that shapes its predictions (weights, head, tokenizer, manifest)."""
    h = hashlib.sha256()
    for f in sorted(Path(d).iterdir()):
        if not f.is_file() or f.name in REPORT_FILES or f.suffix == ".png":
            continue
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):  # 4 MiB at a time (hashlib.file_digest needs Python 3.11)
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def check_teachers(paths: list[str], data: TextData) -> list[Teacher]:
    """The teacher runs of ``paths``; a missing run, or one whose task or labels are not the student data's,
    is a one-line :class:`ConfigError` (before any model is built)."""
    teachers = []
    for path in paths:
        try:
            d = check_run_dir(path)
        except ModelError as e:
            raise ConfigError(f"distill.teachers: {e}") from None
        m = read_manifest(d)
        if m.task != data.task:
            raise ConfigError(
                f"distill.teachers: '{path}' is a {m.task} run, but the student's data is {data.task}; use teachers trained on this task"
            )
        if data.task_type.has_classes and sorted(m.labels) != sorted(data.labels):
            raise ConfigError(
                f"distill.teachers: '{path}' predicts the labels {', '.join(m.labels)}, but the student's data has "
                f"{', '.join(data.labels)}; use teachers trained on the same labels"
            )
        columns = [m.labels.index(label) for label in data.labels] if data.task_type.has_classes else [0]
        teachers.append(Teacher(d, fingerprint_run(d), m, columns))
    return teachers


def _texts_hash(texts: list[str], pairs: list[str] | None) -> str:
    return hashlib.sha256(json.dumps([texts, pairs], ensure_ascii=False).encode()).hexdigest()


def teacher_logits(cfg, teachers: list[Teacher], sets: dict, accelerator, log, progress: bool) -> tuple[dict, dict]:
    """({set name: [K, N, C] logits in the student's label order}, cache stats) for ``sets`` ({name: (texts, pairs)}).

    Each teacher's logits on each set come from the cache or are computed (main process first; the other
    processes then read what it wrote) and cached; the teacher is loaded only for a set the cache lacks."""
    cache = FeatureCache(cache_root(cfg.distill.cache_dir or cfg.transfer.cache_dir), "teachers", "logits")
    stats = {"dir": str(cache.dir), "hits": 0, "misses": 0, "seconds": 0.0}
    out = {name: [] for name in sets}
    for t in teachers:
        done = []
        with accelerator.main_process_first():
            predictor = None
            for name, (texts, pairs) in sets.items():
                parts = {"format": TEACHER_CACHE_FORMAT, "teacher": t.fingerprint, "texts": _texts_hash(texts, pairs)}
                parts["device"] = accelerator.device.type
                key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
                logits = cache.load(key, len(texts))
                if logits is None:
                    t0 = time.perf_counter()
                    predictor = predictor or load_run(t.path, device=str(accelerator.device))
                    logits = torch.from_numpy(predictor.logits(texts, text_pairs=pairs, progress=progress))
                    seconds = time.perf_counter() - t0
                    stats["misses"] += 1
                    stats["seconds"] += seconds
                    cache.save(key, logits, parts)
                    done.append(f"{name} ({len(texts):,} texts) computed in {seconds:.1f}s")
                else:
                    stats["hits"] += 1
                    done.append(f"{name} ({len(texts):,} texts) read from cache")
                out[name].append(logits.numpy()[:, t.columns])
            del predictor
        log(f"teacher outputs of {t.path}: {', '.join(done)} ({cache.dir})")
    stats["seconds"] = round(stats["seconds"], 2)
    return {name: np.stack(v) for name, v in out.items()}, stats


def extra_texts(cfg, data: TextData, mask_token: str) -> tuple[list[str], list[str], dict]:
    """(augmented texts, unlabelled texts, what the run records of them). Unlabelled texts that are also training,
    validation or test texts of the student are left out (a test text must stay unseen)."""
    d, texts = cfg.distill, list(data.splits["train"]["text"])
    a = d.augment
    augmented = []
    if a.copies:
        augmented = augment_texts(
            texts,
            a.copies,
            p_mask=a.p_mask,
            p_replace=a.p_replace,
            p_ngram=a.p_ngram,
            max_ngram=a.max_ngram,
            mask_token=mask_token,
            seed=cfg.train.seed,
        )
    info: dict = {}
    unlabelled: list[str] = []
    if d.unlabelled is not None:
        train, held_out, what = unlabelled_texts(cfg.data, d.unlabelled, d.text_column, 0.05, cfg.train.seed, "distill.unlabelled")
        seen = {t for split in data.splits.values() for t in split["text"]}
        found = list(dict.fromkeys(train + held_out))
        unlabelled = [t for t in found if t not in seen]
        if d.unlabelled_max_samples is not None and len(unlabelled) > d.unlabelled_max_samples:
            keep = np.sort(np.random.default_rng(cfg.train.seed).choice(len(unlabelled), d.unlabelled_max_samples, replace=False))
            unlabelled = [unlabelled[i] for i in keep]
        info = {"source": what, "found": len(found), "left_out_as_student_texts": len(found) - len(set(found) - seen)}
    return augmented, unlabelled, info


def build_transfer_set(cfg, data: TextData, tokenizer, teachers: list[Teacher], accelerator, log, progress: bool) -> TransferSet:
    """The training split with the teachers' soft targets, augmented and unlabelled rows appended (label: a
    placeholder, ``labelled`` 0), and the teachers' test logits."""
    train, test = data.splits["train"], data.splits["test"]
    mask_token = getattr(tokenizer, "mask_token", None) or "[MASK]"
    augmented, unlabelled, source = extra_texts(cfg, data, mask_token)
    labelled = list(train["text"])
    texts = labelled + augmented + unlabelled
    pairs = list(train["text_pair"]) if "text_pair" in train.column_names else None  # no extra rows with pairs (schema)
    test_pairs = list(test["text_pair"]) if pairs is not None else None
    # Each part of the transfer set is cached on its own: more unlabelled texts leave the others' outputs reusable.
    parts = {"training texts": (labelled, pairs), "augmented": (augmented, None), "unlabelled": (unlabelled, None)}
    parts = {name: part for name, part in parts.items() if part[0]}
    logits, cache = teacher_logits(cfg, teachers, {**parts, "test": (list(test["text"]), test_pairs)}, accelerator, log, progress)
    transfer = np.concatenate([logits[name] for name in parts], axis=1)  # [K, N, C], rows in the order of texts
    targets = data.task_type.soft_targets(transfer, cfg.distill.temperature)
    n, extra = len(train), len(augmented) + len(unlabelled)
    labels = list(train["label"])
    placeholder = np.zeros_like(np.asarray(labels[0])).tolist()  # a class id, a 0/1 row or a number, never trained on
    columns = {"text": texts, **({"text_pair": pairs} if pairs is not None else {})}
    columns.update(label=labels + [placeholder] * extra, teacher=targets.tolist(), labelled=[1] * n + [0] * extra)
    rows = {"labelled": n, "augmented": len(augmented), "unlabelled": len(unlabelled)}
    d = cfg.distill
    ensemble = f"{len(teachers)} teachers, {'values' if not data.task_type.has_classes else 'probabilities'} averaged"
    log(
        f"distillation: {n:,} labelled, {len(augmented):,} augmented and {len(unlabelled):,} unlabelled rows; "
        f"{ensemble if len(teachers) > 1 else '1 teacher'}; temperature {d.temperature:g}, alpha {d.alpha:g}"
    )
    record = {
        "teachers": [t.record() for t in teachers],
        "temperature": d.temperature,
        "alpha": d.alpha,
        "rows": rows,
        **({"unlabelled_source": source} if source else {}),
        "cache": cache,
    }
    return TransferSet(datasets.Dataset.from_dict(columns), logits["test"], teachers, record)


def test_record(task, labels: list[str], student_logits: np.ndarray, transfer: TransferSet, targets: np.ndarray, thresholds) -> dict:
    """The student against its teachers on the test split: ``agreement`` (share of rows where both decide the same;
    regression: the Pearson correlation of their values), the teachers' scores and the share of their
    ``task.distill_metric`` the student keeps."""
    teacher_logits = transfer.test_logits
    teacher_thr = _teacher_thresholds(transfer.teachers)
    ensemble = task.ensemble_logits(teacher_logits)
    teacher = task.score(ensemble, targets, labels, teacher_thr)
    student = task.score(student_logits, targets, labels, thresholds)
    s_dec, t_dec = task.decide(student_logits, thresholds), task.decide(ensemble, teacher_thr)
    out: dict = {}
    if task.has_classes:
        n = len(s_dec)
        out["agreement"] = float(np.mean(np.all(s_dec.reshape(n, -1) == t_dec.reshape(n, -1), axis=1))) if n else None
    else:
        out["agreement"] = float(np.corrcoef(s_dec, t_dec)[0, 1]) if len(s_dec) > 1 and np.std(s_dec) and np.std(t_dec) else None
        out["mae_to_teacher"] = float(np.mean(np.abs(s_dec - t_dec)))
    metric = task.distill_metric
    out.update(
        metric=metric,
        student=student[metric],
        teacher=teacher[metric],
        kept=student[metric] / teacher[metric] if teacher[metric] else None,
        teacher_scores=_headline(task, teacher),
    )
    if len(teacher_logits) > 1:
        out["each_teacher"] = [_headline(task, task.score(x, targets, labels, teacher_thr)) for x in teacher_logits]
    return out


def _teacher_thresholds(teachers: list[Teacher]) -> list[float] | None:
    """Multi-label: the teachers' decision thresholds, averaged per label (student order); None for the other tasks."""
    rows = [[m.thresholds[c] for c in t.columns] for t in teachers if (m := t.manifest).thresholds is not None]
    return np.mean(rows, axis=0).tolist() if rows else None


def _headline(task, scores: dict) -> dict:
    return {k: scores[k] for k in task.log_keys if k in scores}


def manifest_record(record: dict) -> dict:
    """What the student's manifest keeps of its distillation: the teachers (paths and fingerprints) and the loss."""
    return {
        "teachers": [{"path": t["path"], "fingerprint": t["fingerprint"]} for t in record["teachers"]],
        "temperature": record["temperature"],
        "alpha": record["alpha"],
    }


def log_line(test: dict) -> str:
    """One line of the test comparison."""
    kept = f" ({test['kept']:.1%} kept)" if test.get("kept") is not None else ""
    agreement = "n/a" if test["agreement"] is None else f"{test['agreement']:.4f}"
    return f"distillation | test agreement with the teacher {agreement}; {test['metric']} {test['student']:.4f} of the teacher's {test['teacher']:.4f}{kept}"
