"""Training a recipe: set-up, fit and finish as separate steps, on one Accelerate loop.

    result = train(cfg)                      # or, step by step:
    with Trainer(cfg) as t:
        t.setup(); t.fit(); result = t.finish()

Same code on CPU, one GPU, many GPUs or many nodes: ``accelerate launch`` decides. Two paths
train nothing by SGD: the logreg head (one scikit-learn fit on cached features) and zero-shot
scoring (the language model's own head). Every other mode runs
:func:`nlp_transfer.training.loop.fit`: the classification objective, or for ``setfit`` the
contrastive-pairs objective, with the recipe's hooks. Speed-ups are applied for the run and
undone before the model is saved.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed

import nlp_transfer.training.checkpoints as ckpt
from nlp_transfer.config import RecipeConfig
from nlp_transfer.data.batching import tokenize
from nlp_transfer.data.chunking import LongTextSpec
from nlp_transfer.data.loading import TextData, load_data
from nlp_transfer.data.sampling import check_class_weights, class_weights
from nlp_transfer.errors import ConfigError
from nlp_transfer.inference.predictor import build_predictor
from nlp_transfer.manifest import read_manifest
from nlp_transfer.models.domain import build_domain_head
from nlp_transfer.models.fast import speedups
from nlp_transfer.models.hub import resolve_checkpoint
from nlp_transfer.recipes import build_classifier
from nlp_transfer.tasks.calibration import calibration_record, fit_calibration
from nlp_transfer.training.distill import build_transfer_set, check_teachers
from nlp_transfer.training.distill import log_line as distill_log_line
from nlp_transfer.training.distill import test_record as distill_test_record
from nlp_transfer.training.evaluation import evaluate_model
from nlp_transfer.training.hooks import default_hooks
from nlp_transfer.training.inputs import Inputs, build_inputs, loader
from nlp_transfer.training.loop import fit
from nlp_transfer.training.objectives import Classification, ContrastivePairs, Distillation, DomainAdversarial
from nlp_transfer.training.precision import allow_precision_change, check_precision, resolve_precision, set_threads
from nlp_transfer.training.rundir import write_run_dir
from nlp_transfer.training.state import LoopState
from nlp_transfer.transfer.adapters import describe_adapter
from nlp_transfer.transfer.modes import apply_transfer, num_layers, param_groups
from nlp_transfer.transfer.prefix import PrefixDataset, frozen_modules
from nlp_transfer.transfer.probe import fit_logreg_head
from nlp_transfer.transfer.regularisers import L2SP
from nlp_transfer.transfer.zero_shot import init_zero_shot_head
from nlp_transfer.utils.environment import peak_memory_mb
from nlp_transfer.utils.progress import interactive

logger = get_logger("nlp_transfer")


@dataclass
class RunResult:
    """What :func:`train` returns: the run's results (as in its ``metrics.json``) and the trained predictor.

    Attributes:
        output_dir: The run directory (``output.dir``), complete on disk.
        history: One dict per epoch: ``train_loss``, ``seconds`` and the ``validation`` metrics.
        best_epoch: The epoch whose weights were kept (by ``train.metric_for_best`` on validation).
        validation: The best epoch's validation metrics.
        test: The best model's test metrics (with per-class rows and the confusion matrix).
        calibration: The calibration fitted on validation, measured before and after (empty for regression).
        predictor: The trained model as a :class:`~nlp_transfer.inference.predictor.Predictor`, without a
            reload from disk: it predicts exactly what ``load_run(output_dir)`` predicts. ``None`` on the
            other processes of a multi-process run (the main process holds the saved model).

    Examples:
        >>> result = train(cfg)
        >>> result.test["accuracy"], result.best_epoch
        >>> result.predictor.predict(["a gorgeous, moving film"]).probabilities
    """

    output_dir: Path
    history: list[dict]
    best_epoch: int
    validation: dict
    test: dict
    timing: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)  # trainable and total parameter counts
    setup: dict = field(default_factory=dict)  # class weights, sampler, windows per split (chunking)
    schedule: dict = field(default_factory=dict)  # optimiser steps, effective batch size, final LR
    resumes: list = field(default_factory=list)  # checkpoints the run was resumed from
    task: str = "single_label"
    calibration: dict = field(default_factory=dict)  # fitted on validation, measured before/after (tasks/calibration.py)
    distillation: dict = field(default_factory=dict)  # distill: teachers, transfer set, the student against them on test
    predictor: object = field(default=None, repr=False, compare=False)  # the main process's trained Predictor


@dataclass
class TaskSetup:
    """What a run needs to know about its task, resolved from the recipe and the data."""

    task: object  # nlp_transfer.tasks.Task
    metric: str  # train.metric_for_best, resolved
    loss_fn: torch.nn.Module
    tune: str | None = None  # multi-label: per_label / global, or None for fixed thresholds
    thresholds: list[float] | None = None  # multi-label: the starting (or fixed) thresholds


def setup_task(cfg: RecipeConfig, data: TextData) -> TaskSetup:
    """Resolve ``cfg`` for ``data``'s task: metric, loss, thresholds. Every mismatch between recipe and
    task is a one-line :class:`ConfigError`, raised before any model is built."""
    task = data.task_type
    metric = task.selection_metric(cfg.train.metric_for_best)
    task.check_recipe(cfg.train, cfg.model.head)
    tune, thresholds = task.threshold_plan(cfg.train.thresholds, data.labels)
    check_class_weights(cfg.train.class_weights, data.labels)
    return TaskSetup(task, metric, task.build_loss(cfg.train.loss, cfg.train.huber_delta), tune, thresholds)


def schedule_info(cfg: RecipeConfig, batches_per_epoch: int, num_processes: int) -> dict:
    """Optimiser steps from the prepared (per-process) loader, and the length of the LR schedule.

    Accelerate's wrapped scheduler advances ``num_processes`` ticks per optimiser step, so the
    schedule gets ``steps * num_processes`` ticks: it ends exactly at the last optimiser step
    on any number of processes.
    """
    per_epoch = math.ceil(batches_per_epoch / cfg.train.grad_accum_steps)
    steps = cfg.train.epochs * per_epoch
    return {
        "num_processes": num_processes,
        "effective_batch_size": cfg.train.batch_size * cfg.train.grad_accum_steps * num_processes,
        "batches_per_epoch_per_process": batches_per_epoch,
        "optimizer_steps_per_epoch": per_epoch,
        "optimizer_steps": steps,
        "warmup_steps": int(cfg.train.warmup_ratio * steps),
        "scheduler_ticks": steps * num_processes,
    }


class Session:
    """What set-up built and fit and finish use, filled in by :meth:`Trainer.setup` step by step (as a
    torchtune recipe's attributes are); the loop and its hooks read it and update ``state``."""

    cfg: RecipeConfig
    accelerator: Accelerator
    precision: str
    show: bool  # progress bars (the local main process, when asked for)
    data: TextData
    task: object  # the data's Task
    setup: TaskSetup
    model: torch.nn.Module  # prepared by accelerate (DDP, FSDP ...)
    raw_model: torch.nn.Module  # the TextClassifier inside it
    tokenizer: object
    inputs: Inputs
    params: dict  # trainable / total parameter counts (updated by gradual unfreezing)
    frozen: list  # modules kept in eval mode while training (updated by gradual unfreezing)
    state: LoopState
    class_weights: list[float] | None = None
    best_state: dict | None = None  # the best epoch's trained weights (CPU copies)
    teachers: list | None = None  # distill: the teacher runs (training/distill.py)
    distill = None  # distill: the TransferSet (rows with the teachers' soft targets, their test logits)
    # Built for the loop only (the logreg probe has none of them):
    optimizer = scheduler = train_loader = val_loader = schedule = target_loader = None  # target: domain-adversarial texts
    objective = running = bar = None  # set by the loop while it runs

    def info(self, msg: str) -> None:
        logger.info(msg, main_process_only=True)

    def trained_keys(self) -> set[str] | None:
        """The state entries training can change (only those are kept for the best epoch); None: all of them."""
        if self.cfg.transfer.mode in ("full", "gradual", "setfit"):  # setfit: the encoder and the head fitted on it
            return None
        return {n for n, p in self.raw_model.named_parameters() if p.requires_grad}


class Trainer:
    """One training run: :meth:`setup`, :meth:`fit`, :meth:`finish` (torchtune's recipe shape).

    Use it as a context manager (or call :meth:`close`): speed-ups and the frozen-prefix
    replay are undone even when a step fails.
    """

    def __init__(self, cfg: RecipeConfig, data: TextData | None = None, progress: bool = True):
        self.cfg, self.given_data, self.progress = cfg, data, progress
        self.s = Session()
        self._undo = contextlib.ExitStack()
        self.t_start = time.perf_counter()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._undo.close()

    # ---- set-up ------------------------------------------------------------------------
    def setup(self) -> Session:
        """Accelerator, data, model with its transfer mode and speed-ups, loaders, optimiser; resume."""
        self._start()
        self._build_model()
        self._build_inputs()
        if not _no_loop(self.cfg):  # the probe is one scikit-learn fit, zero-shot none: no optimiser, no loop
            self._build_optimiser()
            self._resume()
        return self.s

    def _start(self) -> None:
        cfg, s = self.cfg, self.s
        out_dir = Path(cfg.output.dir)
        if out_dir.exists() and not cfg.output.overwrite:
            raise ConfigError(f"output directory '{out_dir}' already exists; set output.overwrite=true or choose another output.dir")
        s.cfg, s.precision = cfg, resolve_precision(cfg.train.mixed_precision)
        check_precision(s.precision)
        self.resume_from = ckpt.resolve_resume(cfg) if cfg.train.resume else None
        allow_precision_change(s.precision)
        s.accelerator = Accelerator(
            mixed_precision=s.precision,
            gradient_accumulation_steps=cfg.train.grad_accum_steps,
            log_with=None if cfg.train.report_to == "none" else cfg.train.report_to,
            project_dir=str(out_dir.parent / "trackers"),
        )
        if self.resume_from is not None:  # a damaged or mismatched checkpoint fails now, before any work
            ckpt.check_checkpoint(self.resume_from, cfg, s.precision, s.accelerator.num_processes)
        set_threads(cfg.train.num_threads)
        set_seed(cfg.train.seed)
        s.show = self.progress and s.accelerator.is_local_main_process
        if not s.show or not interactive():  # datasets' bars would write a line per update into a log file
            datasets.disable_progress_bars()
        s.state = LoopState()

    def _build_model(self) -> None:
        cfg, s = self.cfg, self.s
        if self.given_data is None:
            with s.accelerator.main_process_first():
                s.data = load_data(cfg.data, cfg.model.num_labels)
        elif cfg.model.num_labels is not None and cfg.model.num_labels != self.given_data.num_labels:
            raise ConfigError(f"model.num_labels={cfg.model.num_labels} but the data has {self.given_data.num_labels} labels")
        else:
            s.data = self.given_data
        s.task, s.setup = s.data.task_type, setup_task(cfg, s.data)
        if cfg.distill.enabled:  # a teacher of other labels fails now, before any model is built
            s.teachers = check_teachers(cfg.distill.teachers, s.data)
        model, s.tokenizer = build_classifier(cfg, s.data.labels)
        model.set_task(s.task, s.setup.loss_fn, s.setup.thresholds)
        if cfg.data.label_separator is not None:  # so evaluation reads labels as training did
            model.meta["label_separator"] = cfg.data.label_separator
        if cfg.data.label_columns:
            model.meta["label_columns"] = list(cfg.data.label_columns)
        s.params = apply_transfer(model, cfg.transfer)
        if cfg.transfer.domain_adversarial.target is not None:  # DANN's domain classifier: trains with the model
            model.domain_head = build_domain_head(model.backbone.config.hidden_size, cfg.transfer.domain_adversarial.hidden_size)
            s.params["trainable"] += sum(p.numel() for p in model.domain_head.parameters())
        if cfg.transfer.mode == "zero_shot":  # the head is the language model's output embeddings of the label words
            self.zero_shot = init_zero_shot_head(
                model, s.tokenizer, s.data.labels, cfg.model, resolve_checkpoint(cfg.model.name_or_path, cfg.model.gguf_file)
            )
        s.raw_model = s.model = model
        fast = cfg.train.fast_kernels and s.accelerator.device.type == "cpu"
        speed = self._undo.enter_context(speedups(model, dropout=fast, attention=fast, first_token=True, allocator=fast))
        adapter = f" ({describe_adapter(model.meta['adapter'])})" if model.meta.get("adapter") else ""
        s.info(
            f"{cfg.name}: {cfg.model.name_or_path} ({num_layers(model)} layers), mode {cfg.transfer.mode}, "
            f"{s.params['trainable']:,} of {s.params['total']:,} parameters train{adapter}; {s.data.task} data {s.data.sizes()}; "
            f"precision {s.precision}; {s.accelerator.num_processes} process(es) on {s.accelerator.device}; {speed.describe()}"
        )

    def _build_inputs(self) -> None:
        cfg, s = self.cfg, self.s
        splits = s.data.splits
        if cfg.distill.enabled:  # the training rows with the teachers' outputs (and augmented or unlabelled rows)
            s.distill = build_transfer_set(cfg, s.data, s.tokenizer, s.teachers, s.accelerator, s.info, s.show)
            splits = datasets.DatasetDict({**splits, "train": s.distill.train})
        with s.accelerator.main_process_first():
            tokens = tokenize(splits, s.tokenizer, cfg.model.max_length, LongTextSpec.from_config(cfg.model))
        train_labels = tokens["train"]["labels"]
        if "labelled" in tokens["train"].column_names:  # classes are counted on the rows that have labels
            train_labels = [y for y, keep in zip(train_labels, tokens["train"]["labelled"]) if keep]
        s.class_weights = class_weights(cfg.train.class_weights, s.data.labels, train_labels)
        s.raw_model.set_class_weights(s.class_weights)
        if s.class_weights is not None:
            s.info(f"class weights: {dict(zip(s.data.labels, [round(w, 4) for w in s.class_weights]))}")
        s.frozen = frozen_modules(s.raw_model)  # before the frozen-prefix replay replaces the lower layers
        self.t_inputs = time.perf_counter()
        s.inputs = build_inputs(cfg, s.raw_model, s.tokenizer, tokens, s.accelerator, log=s.info, progress=s.show)
        if s.inputs.prefix is not None:
            self._undo.callback(s.inputs.prefix.remove)
        self.windows = {k: len(v) for k, v in tokens.items()} if cfg.model.chunking else None
        cache = s.inputs.cache
        if s.inputs.features is not None and cache["features"]["misses"]:
            n = sum(len(s.inputs.features[k]) for k in cache["features"]["misses"])
            s.info(f"encoded {n:,} examples once in {s.inputs.encode_seconds:.1f}s (cache: {cache['features']['cache_dir'] or 'off'})")
        if s.inputs.prefix is not None:
            s.info(
                f"frozen-prefix cache: states entering layer {s.inputs.prefix.first_trained + 1} computed once in "
                f"{s.inputs.encode_seconds:.1f}s"
            )

    def _build_optimiser(self) -> None:
        cfg, s = self.cfg, self.s
        acc = s.accelerator
        # Fused AdamW: one kernel per step for all parameters (CPU and CUDA), as Trainer's default.
        optimizer = torch.optim.AdamW(param_groups(s.raw_model, cfg.train, cfg.transfer), lr=cfg.train.lr, fused=True)
        if s.inputs.prefix is not None:
            s.inputs.prefix.install()
        s.model, s.optimizer, s.train_loader, s.val_loader = acc.prepare(s.raw_model, optimizer, s.inputs.train, s.inputs.validation)
        if cfg.transfer.domain_adversarial.target is not None:
            s.target_loader = acc.prepare_data_loader(self._target_loader())
        s.schedule = schedule_info(cfg, len(s.train_loader), acc.num_processes)
        from transformers import get_linear_schedule_with_warmup

        n = s.schedule["num_processes"]
        s.scheduler = acc.prepare(
            get_linear_schedule_with_warmup(s.optimizer.optimizer, s.schedule["warmup_steps"] * n, s.schedule["scheduler_ticks"])
        )
        s.raw_model = acc.unwrap_model(s.model)
        if cfg.train.report_to != "none":
            acc.init_trackers(cfg.name, config=_flat(cfg.to_dict()))

    def _target_loader(self):
        """Batches of the unlabelled target texts of transfer.domain_adversarial, as many per batch as the source's."""
        from nlp_transfer.data.batching import PadCollator, tokenize_texts
        from nlp_transfer.data.loading import unlabelled_texts

        cfg, s = self.cfg, self.s
        d = cfg.transfer.domain_adversarial
        texts, _, what = unlabelled_texts(cfg.data, d.target, d.text_column, 0.05, cfg.train.seed, "transfer.domain_adversarial")
        if d.max_samples is not None and len(texts) > d.max_samples:
            texts = [texts[i] for i in sorted(np.random.default_rng(cfg.train.seed).choice(len(texts), d.max_samples, replace=False))]
        s.info(f"domain-adversarial training against {what}: {len(texts):,} target texts")
        ds = tokenize_texts(texts, s.tokenizer, cfg.model.max_length, False)
        return loader(
            ds,
            cfg.train.batch_size,
            PadCollator(s.tokenizer),
            shuffle=True,
            seed=cfg.train.seed + 1,
            group=cfg.train.group_by_length,
            processes=s.accelerator.num_processes,
        )[0]

    def _resume(self) -> None:
        """Model, optimiser, scheduler, scaler, RNG and loop state from the checkpoint ``train.resume`` names."""
        if self.resume_from is None:
            return
        s = self.s
        s.state, s.best_state = ckpt.load_checkpoint(s.accelerator, self.resume_from)
        st = s.state
        st.resumes.append({"checkpoint": str(self.resume_from), "epoch": st.epoch + 1, "batch": st.batches_done, "step": st.step})
        s.info(f"resumed from {self.resume_from}: epoch {st.epoch + 1}, after {st.batches_done} batch(es) of it, step {st.step}")

    # ---- fit ---------------------------------------------------------------------------
    def fit(self, objective=None, hooks: list | None = None) -> None:
        """The loop with ``objective`` (default: classification with the recipe's regulariser; contrastive pairs for
        setfit) and ``hooks`` (default: the recipe's); the logreg probe and zero-shot scoring have their own paths."""
        s, cfg = self.s, self.cfg
        if _probe_only(cfg):
            fit_probe(s)
            return
        if cfg.transfer.mode == "zero_shot":
            fit_zero_shot(s, self.zero_shot)
            return
        if objective is None and cfg.transfer.mode == "setfit":
            objective = ContrastivePairs(s.setup.metric, s.data.labels, cfg.model.logreg_c, cfg.train.seed, s.class_weights)
        if objective is None:
            regulariser = L2SP(s.raw_model, cfg.transfer.l2sp) if cfg.transfer.l2sp > 0 else None
            args = (s.setup.metric, s.data.labels, cfg.model.chunk_aggregate, s.setup.tune, regulariser)
            if cfg.distill.enabled:
                objective = Distillation(s.raw_model, cfg.distill.temperature, cfg.distill.alpha, *args)
            elif cfg.transfer.domain_adversarial.target:
                objective = DomainAdversarial(s, *args)
            else:
                objective = Classification(*args)
        fit(s, objective, default_hooks(cfg) if hooks is None else hooks)

    # ---- finish ------------------------------------------------------------------------
    def finish(self, test: bool = True, last: bool = True) -> RunResult:
        """The best epoch's model on test, then the run directory (main process), checkpoints removed.

        ``test=False`` (the trials of a hyperparameter search): the test split is not evaluated and summary.md has no
        plots; the run's test metrics stay empty until whoever chose the run scores it (and writes its summary again).
        ``last=False``: more runs follow in this process (a search's trials), so the process group stays up."""
        s, cfg = self.s, self.cfg
        acc = s.accelerator
        if s.inputs.prefix is not None:  # the whole model from here on: the real frozen layers back in place
            s.inputs.prefix.remove()
        st = s.state
        if s.best_state is not None and st.best_epoch != cfg.train.epochs:
            s.raw_model.load_state_dict(s.best_state, strict=False)
        if st.best_thresholds is not None:
            s.raw_model.thresholds = list(st.best_thresholds)
        fit_seconds = time.perf_counter() - self.t_inputs
        test_out: dict = {}
        scores = {}
        if test:
            scores = evaluate_model(
                s.model, acc.prepare_data_loader(s.inputs.test), acc, s.data.labels, cfg.model.chunk_aggregate, outputs=test_out
            )
            s.info(f"test (best epoch {st.best_epoch}) | {s.task.log_line(scores)}")
        calibration, calibration_record = self._calibrate(test_out)
        result = RunResult(
            Path(cfg.output.dir),
            st.history,
            st.best_epoch,
            st.history[st.best_epoch - 1]["validation"],
            scores,
            self._timing(fit_seconds),
            {"trainable": s.params.get("trainable"), "total": s.params.get("total")},
            self._setup_record(),
            self._schedule_record(),
            st.resumes,
            s.data.task,
            calibration_record,
        )
        self._undo.close()  # speed-ups undone: what is saved is the stock model
        if acc.is_main_process:
            # Saved without Accelerate's autocast wrapper: the interop probe compares fp32 logits.
            raw = acc.unwrap_model(s.model, keep_fp32_wrapper=False)
            if s.distill is not None:
                result.distillation = self._distill_record(raw, scores)
            write_run_dir(cfg, result, raw, s.tokenizer, s.data, s.precision, acc, s.setup.metric, calibration, plots=test)
            # The model just saved, with the settings its manifest records: what load_run(output_dir) would build.
            result.predictor = build_predictor(raw, s.tokenizer, read_manifest(result.output_dir))
            if ckpt.enabled(cfg) or cfg.train.resume:  # the run directory is complete: nothing left to resume
                shutil.rmtree(ckpt.checkpoint_root(cfg), ignore_errors=True)
        acc.wait_for_everyone()
        if last:
            acc.end_training()
        else:
            for tracker in acc.trackers:
                tracker.finish()
        return result

    def _distill_record(self, raw, scores: dict) -> dict:
        """The transfer set's record and, when the test split was scored, the student against its teachers there
        (the student's test logits in split order, as its run directory will predict them)."""
        s, cfg = self.s, self.cfg
        record = dict(s.distill.record)
        if scores:
            manifest = raw.manifest(precision=s.precision, eval_batch_size=cfg.train.eval_batch_size)
            test = s.data.splits["test"]
            pairs = list(test["text_pair"]) if "text_pair" in test.column_names else None
            student = build_predictor(raw, s.tokenizer, manifest).logits(list(test["text"]), text_pairs=pairs)
            targets = np.asarray(test["label"])
            record["test"] = distill_test_record(s.task, s.data.labels, student, s.distill, targets, raw.thresholds)
            s.info(distill_log_line(record["test"]))
        return record

    def _calibrate(self, test_out: dict) -> tuple[dict | None, dict]:
        """(parameters for the manifest, the ``metrics.json`` record): the task's calibration fitted on the best
        model's gathered validation logits (main process), measured before and after on validation and test."""
        s, cfg, acc = self.s, self.cfg, self.s.accelerator
        method = s.task.calibration_method
        if method is None:  # regression: no probabilities to calibrate
            return None, {}
        val_loader = s.inputs.validation
        if isinstance(val_loader.dataset, PrefixDataset):  # the replay is gone: the whole model reads the tokens
            val_loader = torch.utils.data.DataLoader(
                val_loader.dataset.tokens, batch_size=cfg.train.eval_batch_size, collate_fn=s.inputs.test.collate_fn
            )
        val_out: dict = {}
        evaluate_model(s.model, acc.prepare_data_loader(val_loader), acc, s.data.labels, cfg.model.chunk_aggregate, outputs=val_out)
        if not acc.is_main_process or not len(val_out["targets"]):
            return None, {}
        calibration = fit_calibration(method, val_out["logits"], val_out["targets"])
        splits = {"validation": (val_out["logits"], val_out["targets"])}
        if test_out:  # empty when the test split was not evaluated
            splits["test"] = (test_out["logits"], test_out["targets"])
        record = calibration_record(calibration, splits)
        fitted = f"temperature {record['temperature']:.3f}" if method == "temperature" else "Platt scaling per label"
        shown = record.get("test") or record["validation"]
        s.info(
            f"calibration ({fitted}, on validation) | {'test' if test_out else 'validation'} ECE {shown['ece_before']:.4f} -> "
            f"{shown['ece_after']:.4f}, NLL {shown['nll_before']:.4f} -> {shown['nll_after']:.4f}"
        )
        return calibration, record

    def _timing(self, fit_seconds: float) -> dict:
        s, st = self.s, self.s.state
        n_tokens = s.accelerator.reduce(torch.tensor(st.n_tokens, device=s.accelerator.device), "sum").item()
        n_samples = s.accelerator.reduce(torch.tensor(st.n_samples, device=s.accelerator.device), "sum").item()
        t_train = st.train_seconds
        return {
            "total_seconds": round(time.perf_counter() - self.t_start, 2),
            "train_seconds": round(t_train, 2),
            "encode_seconds": round(s.inputs.encode_seconds, 2),
            "fit_seconds": round(fit_seconds, 2),
            "train_samples_per_second": round(n_samples / t_train, 1) if t_train and n_samples else None,
            "train_tokens_per_second": round(n_tokens / t_train, 1) if t_train and n_tokens else None,
            "peak_memory_mb": peak_memory_mb(s.accelerator.device.type),  # the main process's (GPU: allocated)
            "cache": s.inputs.cache,
        }

    def _setup_record(self) -> dict:
        s = self.s
        return {
            "class_weights": dict(zip(s.data.labels, s.class_weights)) if s.class_weights is not None else None,
            "sampler": self.cfg.train.sampler,
            "windows": self.windows,
        }

    def _schedule_record(self) -> dict:
        s = self.s
        if s.scheduler is None:  # the probe: no optimiser steps
            return {}
        return {
            **s.schedule,
            "optimizer_steps_done": s.state.step,
            "scheduler_ticks_done": s.scheduler.scheduler.last_epoch,
            "final_lr": s.scheduler.get_last_lr()[0],
        }


def _probe_only(cfg: RecipeConfig) -> bool:
    """The logreg head on frozen features: one scikit-learn fit, no loop (setfit fits it inside the loop)."""
    return cfg.model.head == "logreg" and cfg.transfer.mode != "setfit"


def _no_loop(cfg: RecipeConfig) -> bool:
    """Runs without an optimiser: the logreg probe and zero-shot scoring."""
    return _probe_only(cfg) or cfg.transfer.mode == "zero_shot"


def fit_zero_shot(s: Session, zero_shot: dict) -> None:
    """No training: the validation metrics of the language model's own guess (transfer/zero_shot.py)."""
    t0 = time.perf_counter()
    val = evaluate_model(s.model, s.accelerator.prepare_data_loader(s.inputs.validation), s.accelerator, s.data.labels)
    seconds = time.perf_counter() - t0
    words = ", ".join(f"{label} -> {w['token']!r}" for label, w in zero_shot["label_words"].items())
    calibrated = f", calibrated on {zero_shot['calibration_text']!r}" if zero_shot.get("calibration") else ""
    s.info(f"zero-shot: prompt {s.cfg.model.prompt!r}, label words {words}{calibrated} | validation {s.task.log_line(val)}")
    s.state.history = [
        {
            "epoch": 1,
            "train_loss": None,
            "seconds": round(seconds, 2),
            "validation": val,
            "zero_shot": {"prompt": s.cfg.model.prompt, **zero_shot},
        }
    ]
    s.state.best_epoch, s.state.train_seconds = 1, 0.0


def fit_probe(s: Session) -> None:
    """The logreg head: one scikit-learn fit on the cached features instead of epochs of SGD."""
    t0 = time.perf_counter()
    feats, cfg, acc = s.inputs.features, s.cfg, s.accelerator
    fit = fit_logreg_head(
        s.raw_model.head,
        feats["train"],
        feats["validation"],
        s.data.labels,
        cfg.model.logreg_c,
        s.setup.metric,
        cfg.train.seed,
        s.class_weights,
        cfg.model.chunk_aggregate,
    )
    seconds = time.perf_counter() - t0
    val = evaluate_model(s.model, acc.prepare_data_loader(s.inputs.validation), acc, s.data.labels, cfg.model.chunk_aggregate)
    s.info(
        f"logistic regression head: C={fit['C']} (searched {[r['C'] for r in fit['search']]}) | validation "
        f"{s.task.log_line(val)} | {seconds:.1f}s"
    )
    with torch.no_grad():  # the model's own loss (class weights included) on the training features
        train = feats["train"]
        loss = s.model(features=train.features.to(acc.device), labels=train.labels.to(acc.device))["loss"].item()
    s.state.history = [{"epoch": 1, "train_loss": loss, "seconds": round(seconds, 2), "validation": val, "logreg": fit}]
    s.state.best_epoch, s.state.train_seconds = 1, seconds


def train(cfg: RecipeConfig, data: TextData | None = None, progress: bool = True) -> RunResult:
    """Train the recipe ``cfg`` and write its run directory (``cfg.output.dir``).

    Set-up, fit and finish of one :class:`Trainer` on one Accelerate loop: the same call on CPU, one GPU or
    several processes (``accelerate launch``). The run directory appears complete (model, tokenizer,
    manifest, ``recipe.yaml``, ``metrics.json``, ``summary.md``, ``README.md`` model card) or not at all.

    Args:
        cfg: The recipe (:meth:`RecipeConfig.from_yaml <nlp_transfer.config.schema.RecipeConfig.from_yaml>`,
            :meth:`~nlp_transfer.config.schema.RecipeConfig.replace`).
        data: The data already loaded (:func:`~nlp_transfer.data.loading.load_data`), e.g. to reuse one split
            across runs; default: ``cfg.data`` is loaded.
        progress: Show progress bars (on the main process, in a terminal).

    Returns:
        A :class:`RunResult`: the metrics per epoch, on validation and test, the calibration, and
        ``predictor``, the trained model ready to predict (the same predictions as ``load_run(output_dir)``).

    Raises:
        ConfigError: The recipe does not fit the data or the machine (one line, before any model is built).
        DataError: The data cannot be used as configured.
        TrainingError: Training cannot go on (e.g. a NaN loss); nothing is written.

    Examples:
        >>> from nlp_transfer import RecipeConfig, train
        >>> cfg = RecipeConfig.from_yaml("recipes/rotten_tomatoes/minilm-full.yaml").replace(train={"epochs": 1})
        >>> result = train(cfg)
        >>> result.test["accuracy"]
        0.83
        >>> result.predictor.predict(["a gorgeous, moving film"])
        ['fresh']
    """
    with Trainer(cfg, data, progress) as trainer:
        trainer.setup()
        trainer.fit()
        return trainer.finish()


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
