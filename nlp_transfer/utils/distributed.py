"""The end of a multi-process job: every rank closes its process group together."""

from __future__ import annotations

import sys
from datetime import timedelta


def close_process_group() -> None:
    """Shut the default process group down on every rank together: a gloo rank whose peer closes its connections
    while its own process group is still alive can abort (SIGABRT), so the ranks meet at a barrier first. With
    gloo the barrier waits at most a minute, so a rank that stopped on an error cannot hang the others; then the
    group is left to the exit. Nothing happens where torch.distributed was never imported or never initialised."""
    dist = sys.modules.get("torch.distributed")  # never imported here: a command that ran no torch code skips this
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=60))
        else:
            dist.barrier()
    except RuntimeError:  # a rank did not arrive
        return
    dist.destroy_process_group()
