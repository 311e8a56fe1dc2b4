"""Continued pretraining: the checkpoint's own language-modelling objective on unlabelled text of the domain.

ULMFiT's second stage and task-/domain-adaptive pretraining (Gururangan et al. 2020): before a recipe
fine-tunes a checkpoint on labels, it goes on pretraining on the texts it will meet. Encoders learn
masked language modelling (``mlm``; whole-word masking as an option), decoders next-token prediction
(``clm``). :func:`adapt` runs it on the project's loop (:func:`nlp_transfer.training.loop.fit`: the same
progress, mixed precision, processes, checkpoints and resume as training) and writes an ordinary
checkpoint directory (backbone, tokenizer, ``adapt.json``) that any recipe names as ``model.name_or_path``.

A checkpoint saved without its language-model head (the sentence-transformers MiniLM is a bare
``BertModel``) gets one built as the architecture builds it, tied to the word embeddings where the
architecture ties them; the log says so. Only the backbone is written back, with the parts the
objective does not train (BERT's pooler) as the checkpoint had them.

Masks are drawn per batch from a generator seeded by the recipe's seed and the batch's examples, so
they do not depend on how many batches came before: validation sees the same masks every epoch, and
a resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from nlp_transfer.config import RecipeConfig
from nlp_transfer.errors import ConfigError, DataError
from nlp_transfer.training.hooks import Hook
from nlp_transfer.utils.logs import quiet

logger = logging.getLogger("nlp_transfer")

ADAPT_FILE = "adapt.json"


# ---- the texts ----------------------------------------------------------------------------------------
def adapt_texts(cfg: RecipeConfig) -> tuple[list[str], list[str], str]:
    """(training texts, validation texts, where they came from) for ``cfg.adapt``: the recipe's own training
    and validation texts (no source), else :func:`~nlp_transfer.data.loading.unlabelled_texts` of the source."""
    from nlp_transfer.data.loading import load_data, unlabelled_texts

    a = cfg.adapt
    if a.source is None:
        data = load_data(cfg.data, cfg.model.num_labels)
        train, val, what = list(data.splits["train"]["text"]), list(data.splits["validation"]["text"]), "the recipe's training texts"
    else:
        train, val, what = unlabelled_texts(cfg.data, a.source, a.text_column, a.validation_fraction, cfg.train.seed, "adapt")
    if a.max_samples is not None and len(train) > a.max_samples:
        keep = np.sort(np.random.default_rng(cfg.train.seed).choice(len(train), a.max_samples, replace=False))
        train = [train[i] for i in keep]
    if len(train) < 2 or not val:
        raise DataError(f"adapt: {what} give {len(train)} training and {len(val)} validation texts; adapting needs more text")
    return train, val, what


# ---- the model ------------------------------------------------------------------------------------------
def resolve_objective(cfg: RecipeConfig) -> str:
    from nlp_transfer.recipes import is_decoder_checkpoint

    decoder = is_decoder_checkpoint(cfg.model)
    objective = cfg.adapt.objective if cfg.adapt.objective != "auto" else ("clm" if decoder else "mlm")
    if objective == "mlm" and decoder:
        raise ConfigError(
            f"adapt.objective=mlm needs a masked language model, but '{cfg.model.name_or_path}' is a decoder; "
            "use adapt.objective=clm (or auto)"
        )
    if objective == "clm" and not decoder:
        raise ConfigError(
            f"adapt.objective=clm needs a decoder, but '{cfg.model.name_or_path}' is an encoder; use adapt.objective=mlm (or auto)"
        )
    return objective


def build_language_model(cfg: RecipeConfig, objective: str):
    """(language model, tokenizer, note on its head) for the recipe's checkpoint."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from nlp_transfer.models.hub import load_tokenizer, resolve_checkpoint
    from nlp_transfer.recipes.decoder import ensure_pad_token

    path = resolve_checkpoint(cfg.model.name_or_path, cfg.model.gguf_file)
    tokenizer = load_tokenizer(path)
    cls = AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM
    try:
        model, info = quiet(cls.from_pretrained, path, output_loading_info=True)
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"cannot build a {'masked' if objective == 'mlm' else 'causal'} language model from "
            f"'{cfg.model.name_or_path}': {str(e).splitlines()[0][:200]}"
        ) from None
    if objective == "mlm" and tokenizer.mask_token is None:
        raise ConfigError(
            f"'{cfg.model.name_or_path}''s tokenizer has no mask token, so it cannot be masked; use adapt.objective=clm with a decoder"
        )
    if objective == "clm":
        ensure_pad_token(tokenizer, model)
        model.config.use_cache = False
    new = sorted({k.rsplit(".", 1)[0] for k in info.get("missing_keys", [])})
    out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
    tied = out_emb is not None and out_emb.weight is in_emb.weight
    if new:
        note = (
            f"the checkpoint has no language-model head: built {type(model).__name__}'s ({', '.join(new[:4])}"
            f"{', ...' if len(new) > 4 else ''}), initialised as the architecture does"
            + (", its output layer tied to the word embeddings" if tied else "")
        )
    else:
        note = f"the checkpoint's own language-model head ({type(model).__name__}" + (", tied to the word embeddings)" if tied else ")")
    return model, tokenizer, note


# ---- batches ------------------------------------------------------------------------------------------
def _batch_seed(seed: int, ids: list[list[int]]) -> int:
    h = hashlib.sha256(str(seed).encode())
    for row in ids:
        h.update(np.asarray(row, dtype=np.int64).tobytes())
    return int.from_bytes(h.digest()[:8], "little")


class MaskingCollator:
    """Pads a batch and masks it for MLM with transformers' own masking (``DataCollatorForLanguageModeling``:
    80% [MASK], 10% a random token, 10% kept; whole words on request). Special tokens and padding are never
    chosen; the generator is seeded by ``seed`` and the batch's token ids."""

    def __init__(self, tokenizer, probability: float, whole_word: bool, seed: int):
        import warnings

        from transformers import DataCollatorForLanguageModeling

        from nlp_transfer.data.batching import PadCollator

        self.pad, self.seed = PadCollator(tokenizer), seed
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        with warnings.catch_warnings():  # whole words are always masked with [MASK]: transformers warns so
            warnings.simplefilter("ignore")
            self.mlm = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=probability, whole_word_mask=whole_word)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        offsets = [r["offset_mapping"] for r in rows] if self.mlm.whole_word_mask else None
        batch = self.pad([{k: v for k, v in r.items() if k != "offset_mapping"} for r in rows])
        ids = batch["input_ids"]
        never = torch.isin(ids, self.special) | (batch["attention_mask"] == 0)
        off = None
        if offsets is not None:
            off = np.zeros((*ids.shape, 2), dtype=np.int64)
            for i, o in enumerate(offsets):
                off[i, : len(o)] = np.asarray(o, dtype=np.int64).reshape(-1, 2)
        self.mlm.generator = torch.Generator().manual_seed(_batch_seed(self.seed, [r["input_ids"] for r in rows]))
        batch["input_ids"], batch["labels"] = self.mlm.torch_mask_tokens(ids.clone(), special_tokens_mask=never.long(), offset_mapping=off)
        return batch


class CausalCollator:
    """Pads a batch for next-token prediction: the labels are the tokens, each predicted from the real tokens
    before it (padding, and a text's first token after left padding, are ignored: -100); positions count real
    tokens, so left padding does not shift them."""

    def __init__(self, tokenizer):
        from nlp_transfer.data.batching import PadCollator

        self.pad = PadCollator(tokenizer)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.pad(rows)
        mask = batch["attention_mask"].bool()
        after_real = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], dim=1)  # the position before is a real token
        batch["labels"] = batch["input_ids"].masked_fill(~(mask & after_real), -100)
        batch["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
        return batch


# ---- the objective ----------------------------------------------------------------------------------------
class LanguageModelling:
    """The model's own language-modelling loss; validation: the loss over every predicted token and its perplexity."""

    metric = "loss"

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        loss = model(**batch).loss
        return loss, loss

    def validate(self, session) -> dict:
        acc, model = session.accelerator, session.model
        total = torch.zeros((), device=acc.device, dtype=torch.float64)
        count = torch.zeros((), device=acc.device, dtype=torch.float64)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for batch in session.val_loader:
                labels = batch["labels"]
                n = (labels[:, 1:] != -100).sum() if session.objective_kind == "clm" else (labels != -100).sum()
                with acc.autocast():
                    loss = model(**batch).loss
                total += loss.double() * n
                count += n
        model.train(was_training)
        total, count = acc.reduce(total, "sum"), acc.reduce(count, "sum")
        loss = (total / count.clamp(min=1)).item()
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "predicted_tokens": int(count.item())}


# ---- the run ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class AdaptResult:
    output_dir: Path
    objective: str
    history: list[dict]
    steps: int
    texts: dict  # training and validation texts, and where they came from
    timing: dict
    head_note: str


class StopAfterSteps(Hook):
    """``adapt.max_steps``: stop the epoch in progress once that many optimiser steps are done."""

    def __init__(self, max_steps: int | None):
        self.max_steps = max_steps

    def on_step(self, s) -> None:
        if self.max_steps is not None and s.state.step >= self.max_steps:
            s.state.stopped = True


class AdaptLog(Hook):
    """One line per epoch: training loss, validation loss and perplexity."""

    def on_epoch_end(self, s, record: dict) -> None:
        val = record["validation"]
        s.info(
            f"epoch {record['epoch']}/{s.cfg.train.epochs} | step {s.state.step} | train loss {record['train_loss']:.4f} | "
            f"validation loss {val['loss']:.4f}, perplexity {val['perplexity']:.2f} | {record['seconds']:.1f}s"
        )


def adapt(cfg: RecipeConfig, progress: bool = True) -> AdaptResult:
    """Continued pretraining of ``cfg.model``'s checkpoint on ``cfg.adapt``'s texts; writes ``cfg.output.dir``
    (see the module docstring)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    import nlp_transfer.training.checkpoints as ckpt
    from nlp_transfer.training.hooks import Checkpointing, TrackerLog
    from nlp_transfer.training.loop import fit
    from nlp_transfer.training.precision import allow_precision_change, check_precision, resolve_precision, set_threads
    from nlp_transfer.training.trainer import Session
    from nlp_transfer.utils.progress import interactive

    t_start = time.perf_counter()
    if cfg.adapt.epochs == 0 and cfg.adapt.max_steps is None:
        raise ConfigError("adapt.epochs=0: nothing to adapt; set adapt.epochs to 1 or more (or adapt.max_steps)")
    out = Path(cfg.output.dir)
    if out.exists() and not cfg.output.overwrite:
        raise ConfigError(f"output directory '{out}' already exists; set output.overwrite=true or choose another output.dir")
    objective = resolve_objective(cfg)
    s = Session()
    s.precision = resolve_precision(cfg.train.mixed_precision)
    check_precision(s.precision)
    resume_from = ckpt.resolve_resume(cfg) if cfg.train.resume else None
    allow_precision_change(s.precision)
    s.accelerator = acc = Accelerator(mixed_precision=s.precision, gradient_accumulation_steps=cfg.train.grad_accum_steps)
    set_threads(cfg.train.num_threads)
    set_seed(cfg.train.seed)
    s.show = progress and acc.is_local_main_process
    if not (s.show and interactive()):
        import datasets

        datasets.disable_progress_bars()
    with acc.main_process_first():
        train_texts, val_texts, what = adapt_texts(cfg)
    model, tokenizer, note = build_language_model(cfg, objective)
    loaders = _loaders(cfg, objective, tokenizer, train_texts, val_texts, acc.num_processes)
    s.cfg = cfg = _loop_recipe(cfg, len(loaders[0]), acc.num_processes)
    if resume_from is not None:  # a damaged or mismatched checkpoint fails now, before any work
        ckpt.check_checkpoint(resume_from, cfg, s.precision, acc.num_processes)
    s.info(
        f"{cfg.name}: adapting {cfg.model.name_or_path} by {objective} on {what} ({len(train_texts):,} texts, "
        f"{len(val_texts):,} held out); {note}; {sum(p.numel() for p in model.parameters()):,} parameters train; "
        f"precision {s.precision}; {acc.num_processes} process(es) on {acc.device}"
    )
    _prepare(s, model, tokenizer, loaders, objective)
    if resume_from is not None:
        s.state, _ = ckpt.load_checkpoint(acc, resume_from)
        s.state.resumes.append({"checkpoint": str(resume_from), "epoch": s.state.epoch + 1, "step": s.state.step})
        s.info(f"resumed from {resume_from}: epoch {s.state.epoch + 1}, after {s.state.batches_done} batch(es), step {s.state.step}")
    hooks = [TrackerLog(), AdaptLog(), StopAfterSteps(cfg.adapt.max_steps)]
    if ckpt.enabled(cfg):
        hooks.append(Checkpointing())
    if not s.state.stopped:
        fit(s, LanguageModelling(), hooks)
    result = AdaptResult(
        out,
        objective,
        s.state.history,
        s.state.step,
        {"source": cfg.adapt.source, "what": what, "train": len(train_texts), "validation": len(val_texts)},
        {"total_seconds": round(time.perf_counter() - t_start, 2), "train_seconds": round(s.state.train_seconds, 2)},
        note,
    )
    if acc.is_main_process:
        write_adapted(cfg, acc.unwrap_model(s.model, keep_fp32_wrapper=False), s.tokenizer, result)
        if ckpt.enabled(cfg) or cfg.train.resume:
            shutil.rmtree(ckpt.checkpoint_root(cfg), ignore_errors=True)
    acc.wait_for_everyone()
    return result


def _loaders(cfg: RecipeConfig, objective: str, tokenizer, train_texts, val_texts, processes: int):
    from nlp_transfer.data.batching import tokenize_texts
    from nlp_transfer.training.inputs import loader

    a = cfg.adapt
    whole = objective == "mlm" and a.whole_word_mask
    if whole and not getattr(tokenizer, "is_fast", False):
        raise ConfigError("adapt.whole_word_mask needs a fast tokenizer (word boundaries from its offsets); set it to false")
    collate = MaskingCollator(tokenizer, a.mask_probability, whole, cfg.train.seed) if objective == "mlm" else CausalCollator(tokenizer)
    train_ds = tokenize_texts(train_texts, tokenizer, cfg.model.max_length, whole)
    val_ds = tokenize_texts(val_texts, tokenizer, cfg.model.max_length, whole)
    train, sampler = loader(
        train_ds, cfg.train.batch_size, collate, shuffle=True, seed=cfg.train.seed, group=cfg.train.group_by_length, processes=processes
    )
    val, _ = loader(val_ds, cfg.train.eval_batch_size, collate, shuffle=False)
    return train, val, sampler


def _loop_recipe(cfg: RecipeConfig, batches_per_epoch: int, processes: int) -> RecipeConfig:
    """The recipe the loop reads: adapt's epochs (enough for adapt.max_steps) and learning rate."""
    a = cfg.adapt
    per_epoch = math.ceil(batches_per_epoch / cfg.train.grad_accum_steps)
    epochs = a.epochs if a.max_steps is None else math.ceil(a.max_steps / per_epoch)
    return cfg.replace(f"train.epochs={epochs}", f"train.lr={a.lr}")


def _prepare(s, model, tokenizer, loaders, objective: str) -> None:
    from transformers import get_linear_schedule_with_warmup

    from nlp_transfer.training.inputs import Inputs
    from nlp_transfer.training.state import LoopState

    cfg, acc = s.cfg, s.accelerator
    train, val, sampler = loaders
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.train.lr, fused=True)
    s.model, s.optimizer, s.train_loader, s.val_loader = acc.prepare(model, optimizer, train, val)
    per_epoch = math.ceil(len(s.train_loader) / cfg.train.grad_accum_steps)
    steps = cfg.train.epochs * per_epoch if cfg.adapt.max_steps is None else min(cfg.adapt.max_steps, cfg.train.epochs * per_epoch)
    n = acc.num_processes
    s.scheduler = acc.prepare(get_linear_schedule_with_warmup(s.optimizer.optimizer, int(cfg.train.warmup_ratio * steps) * n, steps * n))
    s.raw_model, s.tokenizer, s.frozen, s.best_state = acc.unwrap_model(s.model), tokenizer, [], None
    s.inputs = Inputs(train, val, None, sampler)
    s.state, s.objective_kind = LoopState(), objective
    s.params = {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def write_adapted(cfg: RecipeConfig, lm, tokenizer, result: AdaptResult) -> None:
    """The adapted backbone (what ``AutoModel`` loads; parts the objective never trained, such as BERT's pooler,
    as the checkpoint had them), its tokenizer and ``adapt.json``, into ``output.dir`` at once."""
    from transformers import AutoModel

    from nlp_transfer.models.hub import resolve_checkpoint
    from nlp_transfer.training.rundir import atomic_directory

    out = result.output_dir
    base = quiet(AutoModel.from_pretrained, resolve_checkpoint(cfg.model.name_or_path, cfg.model.gguf_file))
    trained = lm.base_model.state_dict()
    if base.get_input_embeddings().num_embeddings != lm.get_input_embeddings().num_embeddings:  # a <pad> token was added
        base.resize_token_embeddings(lm.get_input_embeddings().num_embeddings, mean_resizing=False)
    missing, unexpected = base.load_state_dict(trained, strict=False)
    kept = sorted({k.split(".")[0] for k in missing})
    record = {
        "base_checkpoint": cfg.model.name_or_path,
        "gguf_file": cfg.model.gguf_file,
        "objective": result.objective,
        "head": result.head_note,
        "untrained_kept": kept,
        "texts": result.texts,
        "steps": result.steps,
        "history": result.history,
        "timing": result.timing,
        "adapt": dataclasses.asdict(cfg.adapt),
        "unexpected_keys": unexpected[:10],
    }
    with atomic_directory(out) as tmp:
        quiet(base.save_pretrained, tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / ADAPT_FILE).write_text(json.dumps(record, indent=2, default=str))
        (tmp / "recipe.yaml").write_text(cfg.replace("train.resume=null").to_yaml())
