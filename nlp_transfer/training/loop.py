"""The training loop: epochs of optimiser steps on any objective, hooks around it.

Reads top to bottom: for each epoch, the hooks' ``on_epoch_start``, the batches (each one
``objective.loss`` -> backward -> clip -> step), validation by the objective, the hooks'
``on_epoch_end``. Nothing here waits for the device per micro-batch: the loss is summed on
the device and read once per ``train.log_every`` steps and once per epoch; finiteness is
checked once per optimiser step.
"""

from __future__ import annotations

import time

import torch

from nlp_transfer.errors import TrainingError
from nlp_transfer.utils.progress import progress


class Running:
    """Running sums of an epoch, kept on the device (reading them is a host sync)."""

    def __init__(self, device, state, resumed: bool):
        self.loss = torch.tensor(state.loss_sum if resumed else 0.0, device=device)
        self.n = state.loss_n if resumed else 0
        self.tokens = torch.tensor(state.n_tokens, dtype=torch.long, device=device)
        self.samples = state.n_samples
        self.bad = torch.zeros((), dtype=torch.bool, device=device)  # a non-finite loss since the last optimiser step
        self.started, self.seconds_before = time.perf_counter(), state.train_seconds

    def count(self, batch: dict) -> None:
        """Examples and real tokens of a batch (before the objective takes it apart)."""
        self.samples += len(next(iter(batch.values())))
        if "attention_mask" in batch:
            self.tokens += batch["attention_mask"].sum()

    def add(self, loss: torch.Tensor) -> None:
        self.loss += loss.detach().float()
        self.n += 1

    def mean_loss(self) -> float:
        return (self.loss / max(self.n, 1)).item()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def write_into(self, state) -> None:
        """Copy the sums into ``state`` (before a checkpoint is written)."""
        state.loss_sum, state.loss_n = self.loss.item(), self.n
        state.n_tokens, state.n_samples = int(self.tokens.item()), self.samples
        state.train_seconds = self.seconds_before + self.elapsed()


def fit(s, objective, hooks) -> None:
    """Train ``s`` (a :class:`~nlp_transfer.training.trainer.Session`) from ``s.state`` to the last epoch."""
    s.objective = objective
    for epoch in range(s.state.epoch, s.cfg.train.epochs):
        if s.state.stopped:  # decided before an interruption
            break
        for h in hooks:
            h.on_epoch_start(s, epoch)
        seconds = train_epoch(s, objective, hooks, epoch)
        train_loss = s.accelerator.reduce(s.running.loss / max(s.running.n, 1), "mean").item()  # once per epoch
        record = {"epoch": epoch + 1, "train_loss": train_loss, "seconds": round(seconds, 2), "validation": objective.validate(s)}
        s.state.history.append(record)
        for h in hooks:
            h.on_epoch_end(s, record)
        if s.state.stopped:
            break


def train_epoch(s, objective, hooks, epoch: int) -> float:
    """One pass over the training loader (the rest of it, when resuming mid-epoch); returns its seconds."""
    st = s.state
    resume = st.batches_done if epoch == st.epoch else 0  # batches an interrupted run already trained
    st.epoch = epoch
    if s.inputs.sampler is not None:
        s.inputs.sampler.set_epoch(epoch)
    s.train_loader.set_epoch(epoch)  # accelerate's loader would otherwise use its own pass count
    s.model.train()
    for m in s.frozen:  # frozen parts run in eval mode, as the caches computed them
        m.eval()
    s.running = Running(s.accelerator.device, st, resumed=bool(resume))
    clipped = trainable_parameters(s.model, s.accelerator)
    loader = s.accelerator.skip_first_batches(s.train_loader, resume) if resume else s.train_loader
    s.bar = progress(loader, f"epoch {epoch + 1}/{s.cfg.train.epochs}", enabled=s.show)
    for st.batches_done, batch in enumerate(s.bar, start=resume + 1):
        step(s, objective, batch, clipped)
        if s.accelerator.sync_gradients:
            st.step += 1
            for h in hooks:
                h.on_step(s)
            if st.stopped:  # a hook ended training mid-epoch (a step budget)
                break
    seconds = s.running.elapsed()
    s.running.write_into(st)
    st.epoch, st.batches_done = epoch + 1, 0
    return seconds


def step(s, objective, batch: dict, clipped: list) -> None:
    """One micro-batch: forward, backward, and at each optimiser step the finiteness check, clip and update."""
    acc, running = s.accelerator, s.running
    running.count(batch)
    with acc.accumulate(s.model):
        loss, reported = objective.loss(s.model, batch)
        running.bad |= ~torch.isfinite(loss.detach())  # on the device: no sync here
        acc.backward(loss)
        if acc.sync_gradients:
            check_finite(s, loss)
            if s.cfg.train.max_grad_norm:
                acc.clip_grad_norm_(clipped, s.cfg.train.max_grad_norm)
        s.optimizer.step()
        s.scheduler.step()
        s.optimizer.zero_grad(set_to_none=True)
    running.add(reported)


def check_finite(s, loss: torch.Tensor) -> None:
    """Stop with a clear message (and no run directory) when a loss since the last optimiser step was NaN
    or infinite. One host sync per optimiser step; with several processes one collective, so all stop."""
    bad = s.running.bad
    if s.accelerator.num_processes > 1:
        bad = s.accelerator.reduce(bad.float(), "sum") > 0
    if bad.item():
        value = loss.item()
        shown = value if not torch.isfinite(torch.tensor(value)) else "not finite (on another micro-batch or process)"
        hint = "use bf16 instead of fp16, " if s.accelerator.mixed_precision == "fp16" else ""
        raise TrainingError(
            f"the training loss is {shown} at step {s.state.step + 1} (epoch {s.state.epoch + 1}); nothing was written. "
            f"Lower train.lr (now {s.cfg.train.lr:g}), {hint}keep train.max_grad_norm set, or check the data for broken examples"
        )
    s.running.bad.zero_()


def trainable_parameters(model, accelerator) -> list:
    """Parameters whose gradients are clipped: the trainable ones, listed once (walking every
    parameter of a mostly frozen model on each step cost more than the clip itself). FSDP keeps
    every parameter: accelerate recognises the model by the full list and clips the shards
    together. A list, not ``model.parameters()``'s generator: the first clip would use it up."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return list(model.parameters())
    return [p for p in model.parameters() if p.requires_grad]
