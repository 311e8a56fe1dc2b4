"""Small additions around the plain loop: each one feature, called at three points.

``on_epoch_start(session, epoch)``, ``on_step(session)`` after every optimiser step, and
``on_epoch_end(session, record)`` after validation, in the order the trainer lists them:
unfreezing, logging, the best epoch, early stopping, checkpoints (so a checkpoint records
what the hooks before it decided).
"""

from __future__ import annotations

import nlp_transfer.training.checkpoints as ckpt
from nlp_transfer.metrics import is_better, scalar_metrics
from nlp_transfer.transfer.modes import apply_transfer
from nlp_transfer.transfer.prefix import frozen_modules


class Hook:
    def on_epoch_start(self, s, epoch: int) -> None:
        pass

    def on_step(self, s) -> None:
        pass

    def on_epoch_end(self, s, record: dict) -> None:
        pass


class GradualUnfreezing(Hook):
    """ULMFiT: the head alone first; every ``transfer.unfreeze_every`` epochs the next layer groups open."""

    def on_epoch_start(self, s, epoch: int) -> None:
        before = s.params["trainable"]
        s.params = apply_transfer(s.raw_model, s.cfg.transfer, epoch)
        s.frozen = frozen_modules(s.raw_model)
        if s.params["trainable"] != before:
            s.info(f"gradual unfreezing: {s.params['trainable']:,} parameters train from epoch {epoch + 1}")


class TrackerLog(Hook):
    """The running training loss every ``train.log_every`` steps: on the bar and to the trackers."""

    def on_step(self, s) -> None:
        if s.state.step % s.cfg.train.log_every == 0:
            loss = s.running.mean_loss()  # a host sync, once per log_every steps
            s.bar.set_postfix(loss=f"{loss:.4f}")
            s.accelerator.log({"train/loss": loss, "train/lr": s.scheduler.get_last_lr()[0]}, step=s.state.step)

    def on_epoch_end(self, s, record: dict) -> None:
        values = {f"validation/{k}": v for k, v in scalar_metrics(record["validation"]).items()}
        s.accelerator.log({"train/epoch_loss": record["train_loss"], **values}, step=s.state.step)


class KeepBest(Hook):
    """The best epoch by the objective's metric: its score, thresholds and trained weights."""

    def on_epoch_end(self, s, record: dict) -> None:
        st, metric, val = s.state, s.objective.metric, record["validation"]
        if is_better(metric, val[metric], st.best, s.cfg.train.early_stopping_threshold):
            st.best, st.best_epoch, st.best_thresholds, st.stale = val[metric], record["epoch"], val.get("thresholds"), 0
            keys = s.trained_keys()
            s.best_state = {k: v.detach().cpu().clone() for k, v in s.raw_model.state_dict().items() if keys is None or k in keys}
        else:
            st.stale += 1


class EpochLog(Hook):
    """One line per epoch; long head-only runs (feature extraction) log about ten, plus every improvement."""

    def on_epoch_end(self, s, record: dict) -> None:
        epoch, epochs, val = record["epoch"], s.cfg.train.epochs, record["validation"]
        improved = s.state.best_epoch == epoch
        if improved or epoch % max(1, epochs // 10) == 0 or epoch == epochs:
            s.info(
                f"epoch {epoch}/{epochs} | train loss {record['train_loss']:.4f} | validation "
                f"{s.task.log_line(val)} loss {val['loss']:.4f}{' *' if improved else ''} | {record['seconds']:.1f}s"
            )


class EarlyStopping(Hook):
    """Stop after ``train.early_stopping_patience`` epochs without improvement. Every process saw the
    same gathered validation metrics, so they agree without a collective."""

    def on_epoch_end(self, s, record: dict) -> None:
        patience, st = s.cfg.train.early_stopping_patience, s.state
        if patience and st.stale >= patience and record["epoch"] < s.cfg.train.epochs:
            st.stopped = True
            s.info(
                f"early stopping after epoch {record['epoch']}: no {s.objective.metric} improvement for "
                f"{st.stale} epoch(s); best epoch {st.best_epoch}"
            )


class Checkpointing(Hook):
    """Resumable checkpoints every ``train.save_every_steps`` steps (mid-epoch) and at epoch ends."""

    def on_step(self, s) -> None:
        every = s.cfg.train.save_every_steps
        if every and s.state.step % every == 0 and s.state.batches_done < len(s.train_loader):
            self.save(s)

    def on_epoch_end(self, s, record: dict) -> None:
        self.save(s)

    @staticmethod
    def save(s) -> None:
        s.running.write_into(s.state)
        ckpt.save_checkpoint(
            s.accelerator, ckpt.checkpoint_root(s.cfg), s.state, s.best_state, s.cfg, s.precision, s.cfg.train.keep_checkpoints
        )


def default_hooks(cfg) -> list[Hook]:
    """The hooks a recipe asks for, in their order."""
    hooks: list[Hook] = [GradualUnfreezing()] if cfg.transfer.mode == "gradual" else []
    hooks += [TrackerLog(), KeepBest(), EpochLog(), EarlyStopping()]
    if ckpt.enabled(cfg):
        hooks.append(Checkpointing())
    return hooks
