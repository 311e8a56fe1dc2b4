"""The loop state: everything the training loop needs to continue, beside accelerate's own state.

One object, updated in place by the loop, saved by every checkpoint and restored on resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoopState:
    """Where training is and what it has seen so far.

    ``epoch`` is the epoch in progress (0-based); ``batches_done`` how many of its batches
    this process has trained (0 at an epoch boundary, where ``epoch`` is the next one).
    ``loss_sum``/``loss_n``, ``n_tokens``/``n_samples`` are the running sums as of the last
    save (the loop keeps the live ones on the device: reading them is a host sync).
    """

    epoch: int = 0
    batches_done: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    best: float | None = None
    best_epoch: int = 0
    best_thresholds: list | None = None  # multi-label: decision thresholds tuned with the best epoch
    stale: int = 0
    stopped: bool = False  # early stopping decided at the end of epoch ``epoch - 1``
    loss_sum: float = 0.0
    loss_n: int = 0
    n_tokens: int = 0
    n_samples: int = 0
    train_seconds: float = 0.0
    resumes: list = field(default_factory=list)  # where earlier resumptions started
