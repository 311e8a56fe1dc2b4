"""The Accelerate training loop, top to bottom in :func:`train`.

Same code on CPU, one GPU, many GPUs or many nodes: ``accelerate launch`` decides.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .chunking import LongTextSpec, per_document
from .config import RecipeConfig
from .data import LengthGroupedBatchSampler, PadCollator, TextData, load_data, tokenize
from .errors import ConfigError, TrainingError
from .fast import slow_down, speed_up
from .features import (
    FeatureDataset,
    FrozenPrefix,
    PrefixCollator,
    PrefixDataset,
    as_batch,
    cached_features,
    encode_prefix,
    first_trained_layer,
    frozen_modules,
)
from .imbalance import class_weights, sampling_weights
from .metrics import format_metrics, is_better, scalar_metrics
from .probe import fit_logreg_head
from .recipes import build_decoder_classifier, build_encoder_classifier, is_decoder_checkpoint
from .report import write_summary
from .tasks import probabilities, score, setup_task, tune_thresholds
from .transfer import L2SP, apply_transfer, num_layers, param_groups

logger = get_logger("nlp_transfer")


@dataclass
class RunResult:
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


def resolve_precision(requested: str) -> str:
    """``auto`` -> bf16 where the hardware runs it natively (CUDA or a bf16-capable CPU), else no."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    try:
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"
    except (AttributeError, RuntimeError):
        return "no"


def _allow_precision_change(precision: str) -> None:
    """Accelerate keeps one ``AcceleratorState`` per process and refuses a second precision.

    A single process that trains twice (sweeps, notebooks, tests) may change it: forget the
    old state (the process/device state is kept).
    """
    from accelerate.state import AcceleratorState, PartialState

    old = AcceleratorState._shared_state.get("_mixed_precision")
    if old is not None and old != precision and PartialState().num_processes == 1:
        AcceleratorState._reset_state()


def _check_precision(precision: str) -> None:
    """fp16 needs loss scaling, which accelerate does with CUDA's grad scaler only; on CPU it would
    run fp16 autocast unscaled (small gradients underflow to zero), so refuse it."""
    if precision == "fp16" and (not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")):
        raise ConfigError("train.mixed_precision=fp16 needs a GPU (loss scaling is CUDA-only); use bf16 on CPU, or no")


def _schedule_info(cfg: RecipeConfig, batches_per_epoch: int, num_processes: int) -> dict:
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


def _linear_schedule(optimizer, schedule: dict):
    from transformers import get_linear_schedule_with_warmup

    n = schedule["num_processes"]
    return get_linear_schedule_with_warmup(optimizer, schedule["warmup_steps"] * n, schedule["scheduler_ticks"])


def _set_threads(cfg: RecipeConfig) -> None:
    # accelerate launch sets OMP_NUM_THREADS=1 for CPU runs; use the cores we have instead.
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    elif not torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


def build_classifier(cfg: RecipeConfig, labels: list[str]):
    """(model, tokenizer): the recipe module for the checkpoint's architecture."""
    if is_decoder_checkpoint(cfg.model):
        return build_decoder_classifier(cfg.model, labels)
    return build_encoder_classifier(cfg.model, labels)


def _loader(ds, batch_size, collate, *, shuffle, seed=0, group=True, lengths=None, weights=None, processes=1):
    lengths = ds["length"] if lengths is None else lengths  # tokenize() adds "length"
    sampler = LengthGroupedBatchSampler(lengths, batch_size, shuffle, seed, group, weights, short_last=processes > 1)
    # A generator of its own: iterating the loader then never draws from the global RNG, so a
    # resumed run continues the dropout stream exactly where the interrupted one stopped.
    gen = torch.Generator() if shuffle else None
    return torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate, generator=gen), sampler


@dataclass
class _Inputs:
    """What the loop iterates over, and what was computed once to get there."""

    train: torch.utils.data.DataLoader
    validation: torch.utils.data.DataLoader
    test: torch.utils.data.DataLoader
    sampler: LengthGroupedBatchSampler | None = None
    features: dict | None = None  # feature_extraction: {split: FeatureDataset}
    prefix: FrozenPrefix | None = None  # partial: replay of the frozen layers (install before prepare)
    encode_seconds: float = 0.0
    cache: dict = field(default_factory=dict)
    started: float = 0.0  # when the frozen work began: fit time = frozen work + training + validation
    params: dict = field(default_factory=dict)  # trainable / total parameter counts (at the end, for gradual)
    setup: dict = field(default_factory=dict)  # recorded in metrics.json as "setup"
    schedule: dict = field(default_factory=dict)  # optimiser steps, effective batch, LR schedule length
    resumes: list = field(default_factory=list)  # checkpoints this run was resumed from


def build_inputs(cfg: RecipeConfig, model, tokenizer, tokens, accelerator, log=None, progress: bool = True) -> _Inputs:
    """Loaders for the recipe's mode, doing frozen work once.

    * ``feature_extraction``: pooled features from the on-disk cache (encoding what is
      missing); the head trains on them.
    * ``partial``: hidden states entering the first trained layer, computed once; the
      frozen layers are swapped for a replay of them (``FrozenPrefix``).
    * otherwise (or with the caches switched off): token batches.
    """
    collate = PadCollator(tokenizer)
    bs, ebs, seed, t = cfg.train.batch_size, cfg.train.eval_batch_size, cfg.train.seed, cfg.transfer
    mode = t.mode
    # train.sampler=weighted: every class equally likely per draw (over the rows that train: windows, with chunking)
    weights = sampling_weights(tokens["train"]["labels"]) if cfg.train.sampler == "weighted" else None
    if mode == "feature_extraction" and (t.cache_features or cfg.model.head == "logreg"):
        model.to(accelerator.device)
        feats, info = cached_features(
            model, tokens, tokenizer, collate, ebs, accelerator, pooling=model.pooling, max_length=cfg.model.max_length,
            precision=accelerator.mixed_precision, cache_dir=t.cache_dir, use_disk=t.cache_features, log=log,
            progress=progress,
        )
        # The same length-grouped batches as the token path, so cached and uncached runs match.
        # FeatureDataset hands out whole batches (__getitems__): no per-example collation.
        train, sampler = _loader(feats["train"], bs, as_batch, shuffle=True, seed=seed, group=cfg.train.group_by_length,
                                 lengths=tokens["train"]["length"], weights=weights, processes=accelerator.num_processes)
        return _Inputs(
            train,
            torch.utils.data.DataLoader(feats["validation"], batch_size=ebs, collate_fn=as_batch),
            torch.utils.data.DataLoader(feats["test"], batch_size=ebs, collate_fn=as_batch),
            sampler, features=feats, encode_seconds=info.pop("encode_seconds"), cache={"features": info},
        )
    first = first_trained_layer(model)
    if mode == "partial" and t.cache_prefix and first >= 1:
        model.to(accelerator.device)
        t0 = time.perf_counter()
        states = {s: encode_prefix(model, tokens[s], collate, ebs, accelerator, first, f"caching {s}", progress) for s in ("train", "validation")}
        pcollate = PrefixCollator(collate, getattr(tokenizer, "padding_side", "right"))
        mk = lambda s: PrefixDataset(tokens[s], states[s])  # noqa: E731
        train, sampler = _loader(mk("train"), bs, pcollate, shuffle=True, seed=seed, group=cfg.train.group_by_length,
                                 lengths=tokens["train"]["length"], weights=weights, processes=accelerator.num_processes)
        val, _ = _loader(mk("validation"), ebs, pcollate, shuffle=False, lengths=tokens["validation"]["length"])
        test, _ = _loader(tokens["test"], ebs, collate, shuffle=False)  # test runs the whole model, as saved
        seconds = time.perf_counter() - t0
        return _Inputs(train, val, test, sampler, prefix=FrozenPrefix(model, first), encode_seconds=seconds,
                       cache={"prefix": {"first_trained_layer": first, "seconds": round(seconds, 2)}})
    train, sampler = _loader(tokens["train"], bs, collate, shuffle=True, seed=seed, group=cfg.train.group_by_length,
                             weights=weights, processes=accelerator.num_processes)
    val, _ = _loader(tokens["validation"], ebs, collate, shuffle=False)
    test, _ = _loader(tokens["test"], ebs, collate, shuffle=False)
    return _Inputs(train, val, test, sampler)


@torch.inference_mode()
def evaluate(model, loader, accelerator, labels: list[str], aggregate: str = "mean", tune: str | None = None) -> dict:
    """The task's metrics on a prepared loader; every example counted once across processes.

    Batches with ``doc_id`` (chunking) hold windows: their logits are gathered with the
    document ids, then aggregated per document (``aggregate``: mean or max), so metrics and
    loss count documents, whichever process saw which window. The loss is the task's loss
    without class weights.

    Multi-label: with ``tune`` (``per_label`` or ``global``) the decision thresholds are first
    tuned on these examples (validation only) and returned in ``metrics["thresholds"]``;
    otherwise the model's own thresholds are used.
    """
    raw = accelerator.unwrap_model(model)
    model.eval()
    logits_all, refs, docs = [], [], []
    for batch in loader:
        doc = batch.pop("doc_id", None)
        out = model(**batch)
        gathered = accelerator.gather_for_metrics((out["logits"].float(), batch["labels"]) + ((doc,) if doc is not None else ()))
        logits_all.append(gathered[0].cpu())
        refs.append(gathered[1].cpu())
        if doc is not None:
            docs.append(gathered[2].cpu())
    logits, y = torch.cat(logits_all), torch.cat(refs)
    if docs:
        n_windows = len(y)
        logits, y = per_document(logits, y, torch.cat(docs), aggregate)
    thresholds = raw.thresholds
    if tune and raw.task == "multi_label":
        thresholds = tune_thresholds(probabilities(raw.task, logits.numpy()), y.numpy(), tune)
    metrics = score(raw.task, logits.numpy(), y.numpy(), labels, thresholds)
    metrics["loss"] = raw.loss_fn(logits, y).item()
    if docs:
        metrics["num_windows"] = n_windows
    return metrics


def train(cfg: RecipeConfig, data: TextData | None = None, progress: bool = True) -> RunResult:
    """Train ``cfg`` and write its run directory. Returns the metrics.

    ``data`` may be passed pre-loaded (research code, tests); otherwise ``cfg.data`` is loaded.
    """
    out_dir = Path(cfg.output.dir)
    if out_dir.exists() and not cfg.output.overwrite:
        raise ConfigError(f"output directory '{out_dir}' already exists; set output.overwrite=true or choose another output.dir")
    precision = resolve_precision(cfg.train.mixed_precision)
    _check_precision(precision)
    resume_from = ckpt.resolve_resume(cfg) if cfg.train.resume else None
    _allow_precision_change(precision)
    accelerator = Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=cfg.train.grad_accum_steps,
        log_with=None if cfg.train.report_to == "none" else cfg.train.report_to,
        project_dir=str(out_dir.parent / "trackers"),
    )
    if resume_from is not None:  # a damaged or mismatched checkpoint fails now, before any work
        ckpt.check_checkpoint(resume_from, cfg, precision, accelerator.num_processes)
    _set_threads(cfg)
    set_seed(cfg.train.seed)
    t_start = time.perf_counter()
    show = progress and accelerator.is_local_main_process
    if not show:
        datasets.disable_progress_bars()

    # ---- data and model ---------------------------------------------------------------
    if data is None:
        with accelerator.main_process_first():
            data = load_data(cfg.data, cfg.model.num_labels)
    elif cfg.model.num_labels is not None and cfg.model.num_labels != data.num_labels:
        raise ConfigError(f"model.num_labels={cfg.model.num_labels} but the data has {data.num_labels} labels")
    task = setup_task(cfg, data)  # metric, loss and thresholds of the data's task (single/multi-label, regression)
    metric = task.metric
    model, tokenizer = build_classifier(cfg, data.labels)
    model.set_task(task.task, task.loss_fn, task.thresholds)
    if cfg.data.label_separator is not None:  # so evaluation reads labels as training did
        model.meta["label_separator"] = cfg.data.label_separator
    if cfg.data.label_columns:
        model.meta["label_columns"] = list(cfg.data.label_columns)
    counts = apply_transfer(model, cfg.transfer)
    fast = speed_up(model) if cfg.train.fast_kernels and accelerator.device.type == "cpu" else None
    logger.info(
        f"{cfg.name}: {cfg.model.name_or_path} ({num_layers(model)} layers), mode {cfg.transfer.mode}, "
        f"{counts['trainable']:,} of {counts['total']:,} parameters train; {data.task} data {data.sizes()}; "
        f"precision {precision}; {accelerator.num_processes} process(es) on {accelerator.device}"
        + (f"; fast kernels: {fast['dropout']} dropouts{', attention' if fast['attention'] else ''}"
           f"{', allocator' if fast['allocator'] else ''}" if fast else ""),
        main_process_only=True,
    )
    with accelerator.main_process_first():
        tokens = tokenize(data.splits, tokenizer, cfg.model.max_length, LongTextSpec.from_config(cfg.model))
    weights = class_weights(cfg.train.class_weights, data.labels, tokens["train"]["labels"])
    model.set_class_weights(weights)
    if weights is not None:
        logger.info(f"class weights: {dict(zip(data.labels, [round(w, 4) for w in weights]))}", main_process_only=True)
    info = lambda msg: logger.info(msg, main_process_only=True)  # noqa: E731
    frozen = frozen_modules(model)  # run in eval mode, as the caches compute them
    t_inputs = time.perf_counter()
    inputs = build_inputs(cfg, model, tokenizer, tokens, accelerator, log=info, progress=show)
    inputs.started, inputs.params = t_inputs, counts
    inputs.setup = {
        "class_weights": dict(zip(data.labels, weights)) if weights is not None else None,
        "sampler": cfg.train.sampler,
        "windows": {s: len(tokens[s]) for s in tokens} if cfg.model.chunking else None,
    }
    if inputs.features is not None and inputs.cache["features"]["misses"]:
        n = sum(len(inputs.features[s]) for s in inputs.cache["features"]["misses"])
        info(f"encoded {n:,} examples once in {inputs.encode_seconds:.1f}s (cache: {inputs.cache['features']['cache_dir'] or 'off'})")
    if inputs.prefix is not None:
        info(f"frozen-prefix cache: states entering layer {inputs.prefix.first_trained + 1} computed once in {inputs.encode_seconds:.1f}s")

    if cfg.model.head == "logreg":
        return _finish(cfg, *_fit_probe(cfg, model, inputs, data, accelerator, info, metric, weights), model, tokenizer, data,
                       inputs, precision, accelerator, t_start, 0, 0, metric)

    # ---- optimiser and schedule ---------------------------------------------------------
    # Fused AdamW: one kernel per step for all parameters (CPU and CUDA), as Trainer's default.
    optimizer = torch.optim.AdamW(param_groups(model, cfg.train, cfg.transfer), lr=cfg.train.lr, fused=True)
    if inputs.prefix is not None:
        inputs.prefix.install()
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, inputs.train, inputs.validation)
    schedule = _schedule_info(cfg, len(train_loader), accelerator.num_processes)
    scheduler = accelerator.prepare(_linear_schedule(optimizer.optimizer, schedule))
    raw_model = accelerator.unwrap_model(model)
    l2sp = L2SP(raw_model, cfg.transfer.l2sp) if cfg.transfer.l2sp > 0 else None
    if cfg.train.report_to != "none":
        accelerator.init_trackers(cfg.name, config=_flat(cfg.to_dict()))

    # ---- resume (model, optimiser, scheduler, scaler, RNG, loop state) ------------------
    loop, best_state = ckpt.LoopState(), None
    if resume_from is not None:
        loop, best_state = ckpt.load_checkpoint(accelerator, resume_from)
        loop.resumes.append({"checkpoint": str(resume_from), "epoch": loop.epoch + 1, "batch": loop.batches_done,
                             "step": loop.step})
        info(f"resumed from {resume_from}: epoch {loop.epoch + 1}, after {loop.batches_done} batch(es) of it, step {loop.step}")
    saving = ckpt.enabled(cfg)

    def save_checkpoint(**position):
        """Record the loop's state (the running values below, plus ``position``: where in the
        epoch and the loss so far) in ``loop``, and write a checkpoint of it."""
        nonlocal loop
        loop = replace(loop, step=step, best=best, best_epoch=best_epoch, best_thresholds=best_thresholds, stale=stale,
                       n_tokens=n_tokens.item(), n_samples=n_samples.item(), **position)
        ckpt.save_checkpoint(accelerator, ckpt.checkpoint_root(cfg), loop, best_state, cfg, precision, cfg.train.keep_checkpoints)

    # ---- train ------------------------------------------------------------------------
    history, best, best_epoch, step, stale = loop.history, loop.best, loop.best_epoch, loop.step, loop.stale
    n_tokens = torch.tensor(loop.n_tokens, dtype=torch.long, device=accelerator.device)
    n_samples = torch.tensor(loop.n_samples, dtype=torch.long, device=accelerator.device)
    t_train = loop.train_seconds
    best_thresholds = loop.best_thresholds  # multi-label: the thresholds tuned with the best epoch
    clipped = _clipped(model, accelerator)
    for epoch in range(loop.epoch, cfg.train.epochs):
        if loop.stopped:
            break
        if cfg.transfer.mode == "gradual":
            before = counts["trainable"]
            counts = inputs.params = apply_transfer(raw_model, cfg.transfer, epoch)
            frozen = frozen_modules(raw_model)
            if counts["trainable"] != before:
                info(f"gradual unfreezing: {counts['trainable']:,} parameters train from epoch {epoch + 1}")
                clipped = _clipped(model, accelerator)
        if inputs.sampler is not None:
            inputs.sampler.set_epoch(epoch)
        train_loader.set_epoch(epoch)  # accelerate's loader would otherwise use its own pass count
        model.train()
        for m in frozen:
            m.eval()
        skip = loop.batches_done if epoch == loop.epoch else 0  # batches an interrupted run already trained
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        t0, loss_sum, loss_n = time.perf_counter(), (loop.loss_sum if skip else 0.0), (loop.loss_n if skip else 0)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=not show, leave=False)
        for batch_index, batch in enumerate(bar, start=skip + 1):
            batch.pop("doc_id", None)  # windows train as examples of their own
            with accelerator.accumulate(model):
                out = model(**batch)
                loss = out["loss"] if l2sp is None else out["loss"] + l2sp()
                _check_finite(loss, accelerator, cfg, epoch, step + 1)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.train.max_grad_norm:
                    accelerator.clip_grad_norm_(clipped, cfg.train.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += out["loss"].detach().float().item()
            loss_n += 1
            n_samples += len(batch["labels"])
            if "attention_mask" in batch:
                n_tokens += batch["attention_mask"].sum()
            if accelerator.sync_gradients:
                step += 1
                if step % cfg.train.log_every == 0:
                    bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}")
                    accelerator.log({"train/loss": loss_sum / loss_n, "train/lr": scheduler.get_last_lr()[0]}, step=step)
                if cfg.train.save_every_steps and step % cfg.train.save_every_steps == 0 and batch_index < len(train_loader):
                    save_checkpoint(epoch=epoch, batches_done=batch_index, loss_sum=loss_sum, loss_n=loss_n,
                                    train_seconds=t_train + time.perf_counter() - t0)
        t_epoch = time.perf_counter() - t0
        t_train += t_epoch
        val = evaluate(model, val_loader, accelerator, data.labels, cfg.model.chunk_aggregate, tune=task.tune)
        train_loss = accelerator.reduce(torch.tensor(loss_sum / max(loss_n, 1), device=accelerator.device), "mean").item()
        record = {"epoch": epoch + 1, "train_loss": train_loss, "seconds": round(t_epoch, 2), "validation": val}
        history.append(record)
        accelerator.log({"train/epoch_loss": train_loss, **{f"validation/{k}": v for k, v in scalar_metrics(val).items()}}, step=step)
        improved = is_better(metric, val[metric], best, cfg.train.early_stopping_threshold)
        stale = 0 if improved else stale + 1
        if improved:
            best, best_epoch, best_thresholds = val[metric], epoch + 1, val.get("thresholds")
            best_state = {k: v.detach().cpu().clone() for k, v in raw_model.state_dict().items() if _trains(raw_model, k, cfg)}
        # Long head-only runs (feature extraction) log about ten lines, plus every improvement.
        every = max(1, cfg.train.epochs // 10)
        if improved or (epoch + 1) % every == 0 or epoch + 1 == cfg.train.epochs:
            info(
                f"epoch {epoch + 1}/{cfg.train.epochs} | train loss {train_loss:.4f} | validation "
                f"{format_metrics(val)} loss {val['loss']:.4f}{' *' if improved else ''} | {t_epoch:.1f}s"
            )
        # Early stopping: every process saw the same gathered validation metrics, so they agree.
        patience = cfg.train.early_stopping_patience
        stop = bool(patience and stale >= patience and epoch + 1 < cfg.train.epochs)
        if saving:
            save_checkpoint(epoch=epoch + 1, batches_done=0, stopped=stop, loss_sum=0.0, loss_n=0, train_seconds=t_train)
        if stop:
            info(f"early stopping after epoch {epoch + 1}: no {metric} improvement for {stale} epoch(s); "
                 f"best epoch {best_epoch}")
            break

    # The whole model from here on: the real frozen layers back in place, the best epoch's weights.
    slow_down(raw_model)
    if inputs.prefix is not None:
        inputs.prefix.remove()
    if best_state is not None and best_epoch != cfg.train.epochs:
        raw_model.load_state_dict(best_state, strict=False)
    if best_thresholds is not None:
        raw_model.thresholds = list(best_thresholds)
    n_tokens, n_samples = accelerator.reduce(n_tokens, "sum").item(), accelerator.reduce(n_samples, "sum").item()
    inputs.schedule = {**schedule, "optimizer_steps_done": step, "scheduler_ticks_done": scheduler.scheduler.last_epoch,
                       "final_lr": scheduler.get_last_lr()[0]}
    inputs.resumes = loop.resumes
    return _finish(cfg, history, best_epoch, t_train, model, tokenizer, data, inputs, precision, accelerator,
                   t_start, n_samples, n_tokens, metric)


def _clipped(model, accelerator) -> list:
    """Parameters whose gradients are clipped: the trainable ones, listed once (walking every
    parameter of a mostly frozen model on each step cost more than the clip itself). FSDP keeps
    every parameter: accelerate recognises the model by the full list and clips the shards
    together. A list, not ``model.parameters()``'s generator: the first clip would use it up."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return list(model.parameters())
    return [p for p in model.parameters() if p.requires_grad]


def _check_finite(loss: torch.Tensor, accelerator, cfg: RecipeConfig, epoch: int, step: int) -> None:
    """Stop with a clear message (and no run directory) when the loss is NaN or infinite.

    The flag is summed across processes so that all of them stop together.
    """
    bad = (~torch.isfinite(loss.detach())).float()
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, "sum")
    if bad.item() > 0:
        hint = "use bf16 instead of fp16, " if accelerator.mixed_precision == "fp16" else ""
        raise TrainingError(
            f"the training loss is {loss.item()} at step {step} (epoch {epoch + 1}); nothing was written. "
            f"Lower train.lr (now {cfg.train.lr:g}), {hint}keep train.max_grad_norm set, or check the data for broken examples"
        )


def _fit_probe(cfg: RecipeConfig, model, inputs: _Inputs, data: TextData, accelerator, info, metric: str,
               class_weights: list[float] | None) -> tuple[list, int, float]:
    """The logreg head: one scikit-learn fit on the cached features instead of epochs of SGD."""
    t0 = time.perf_counter()
    feats = inputs.features
    fit = fit_logreg_head(model.head, feats["train"], feats["validation"], data.labels, cfg.model.logreg_c,
                          metric, cfg.train.seed, class_weights, cfg.model.chunk_aggregate)
    seconds = time.perf_counter() - t0
    val = evaluate(model, accelerator.prepare_data_loader(inputs.validation), accelerator, data.labels, cfg.model.chunk_aggregate)
    info(f"logistic regression head: C={fit['C']} (searched {[r['C'] for r in fit['search']]}) | validation "
         f"{format_metrics(val)} | {seconds:.1f}s")
    with torch.no_grad():  # the model's own loss (class weights included) on the training features
        train = feats["train"]
        train_loss = model(features=train.features.to(accelerator.device), labels=train.labels.to(accelerator.device))["loss"].item()
    history = [{"epoch": 1, "train_loss": train_loss, "seconds": round(seconds, 2), "validation": val, "logreg": fit}]
    return history, 1, seconds


def _finish(cfg, history, best_epoch, t_train, model, tokenizer, data, inputs: _Inputs, precision,
            accelerator, t_start, n_samples, n_tokens, metric: str) -> RunResult:
    """Best epoch on test, then the run directory."""
    fit_seconds = time.perf_counter() - inputs.started
    test = evaluate(model, accelerator.prepare_data_loader(inputs.test), accelerator, data.labels, cfg.model.chunk_aggregate)
    logger.info(f"test (best epoch {best_epoch}) | {format_metrics(test)}", main_process_only=True)
    timing = {
        "total_seconds": round(time.perf_counter() - t_start, 2),
        "train_seconds": round(t_train, 2),
        "encode_seconds": round(inputs.encode_seconds, 2),
        "fit_seconds": round(fit_seconds, 2),
        "train_samples_per_second": round(n_samples / t_train, 1) if t_train and n_samples else None,
        "train_tokens_per_second": round(n_tokens / t_train, 1) if t_train and n_tokens else None,
        "cache": inputs.cache,
    }
    params = {"trainable": inputs.params.get("trainable"), "total": inputs.params.get("total")}
    out_dir = Path(cfg.output.dir)
    result = RunResult(out_dir, history, best_epoch, history[best_epoch - 1]["validation"], test, timing, params,
                       inputs.setup, inputs.schedule, inputs.resumes)
    if accelerator.is_main_process:
        # Saved without Accelerate's autocast wrapper: the interop probe compares fp32 logits.
        raw_model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
        _write_run_dir(cfg, result, raw_model, tokenizer, data, precision, accelerator, metric)
        if ckpt.enabled(cfg) or cfg.train.resume:  # the run directory is complete: nothing left to resume
            shutil.rmtree(ckpt.checkpoint_root(cfg), ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def _trains(model, key: str, cfg: RecipeConfig) -> bool:
    """Which state entries can change (only those are snapshotted for the best epoch)."""
    if cfg.transfer.mode in ("full", "gradual"):
        return True
    params = dict(model.named_parameters())
    return key in params and params[key].requires_grad


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def environment_info(precision: str, accelerator, seed: int | None = None) -> dict:
    """Library versions, hardware and launch settings: what a rerun needs to match."""
    from importlib.metadata import PackageNotFoundError, version

    def pkg(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "seed": seed,
        "python": platform.python_version(),
        "torch": torch.__version__,
        **{name: pkg(name) for name in ("transformers", "datasets", "accelerate", "tokenizers", "safetensors", "numpy",
                                         "scikit-learn", "nlp-transfer")},
        "platform": platform.platform(),
        "processor": _cpu_model() or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "threads": torch.get_num_threads(),
        "device": str(accelerator.device),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda_version": torch.version.cuda,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "distributed_type": str(accelerator.distributed_type.value),
        "num_processes": accelerator.num_processes,
        "mixed_precision": precision,
    }


def _data_summary(data: TextData) -> dict:
    """Split sizes and label balance (regression: target statistics) for metrics.json."""
    out = {"sizes": data.sizes()}
    if data.task == "regression":
        out["target"] = {s: data.target_stats(s) for s in data.splits}
    else:
        out["label_counts"] = {s: data.label_counts(s) for s in data.splits}
    return out


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _write_run_dir(cfg, result: RunResult, model, tokenizer, data: TextData, precision: str, accelerator, metric: str) -> None:
    """Write everything into a hidden sibling, then rename: a run dir is complete or absent."""
    out = result.output_dir
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(tmp, tokenizer)
        (tmp / "recipe.yaml").write_text(cfg.replace("train.resume=null").to_yaml())  # reruns start afresh
        (tmp / "labels.json").write_text(json.dumps(data.labels, indent=2))
        metrics = {
            "name": cfg.name,
            "epochs": result.history,
            "best_epoch": result.best_epoch,
            "task": data.task,
            "metric_for_best": metric,
            "validation": result.validation,
            "test": result.test,
            "timing": result.timing,
            "parameters": result.parameters,
            "setup": result.setup,
            "schedule": result.schedule,
            "resumed_from": result.resumes,
            "data": _data_summary(data),
            "environment": environment_info(precision, accelerator, cfg.train.seed),
        }
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        write_summary(tmp, cfg, metrics)
        if out.exists():
            trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            out.rename(trash)
            tmp.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
