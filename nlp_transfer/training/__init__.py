"""Training: set-up, fit and finish (``trainer``), the loop (``loop``) with its objectives (``objectives``)
and hooks (``hooks``), the loop state (``state``), resumable checkpoints (``checkpoints``), loaders with
frozen work done once (``inputs``), in-run evaluation (``evaluation``) and the run directory (``rundir``)."""

from nlp_transfer.training.trainer import RunResult, Trainer, train

__all__ = ["train", "Trainer", "RunResult"]
