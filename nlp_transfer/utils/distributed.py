"""The end of a multi-process job: every rank closes its process group together, then leaves at once."""

from __future__ import annotations

import atexit
import faulthandler
import os
import sys
from datetime import timedelta
from typing import NoReturn


def launched_rank() -> bool:
    """True in one process of a multi-process launch (torchrun and accelerate launch set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def watch_rank() -> None:
    """In one process of several: a fatal signal (an abort in a C++ thread) prints every thread's Python stack,
    so the log says where the rank was."""
    if launched_rank() and not faulthandler.is_enabled():
        faulthandler.enable()


def close_process_group() -> None:
    """Shut the default process group down on every rank together: a gloo rank whose peer closes its connections
    while its own process group is still alive can abort (SIGABRT), so the ranks meet at a barrier first. With
    gloo the barrier waits at most a minute, so a rank that stopped on an error cannot hang the others (its group
    is then left to the exit); then the group is destroyed. Nothing happens where torch.distributed was never
    imported or never initialised."""
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


def exit_rank(code: int) -> NoReturn:
    """End one process of a finished multi-process command: Python's exit handlers run (log files flushed,
    temporary folders removed), then the process exits without the interpreter's teardown. After a training
    run, gloo's threads outlive ``destroy_process_group`` (the process group is still referenced, by the
    DistributedDataParallel wrapper among others), so the teardown would destroy them in no fixed order among
    torch's other C++ objects: the way a finished rank aborted (``terminate called without an active
    exception``, SIGABRT) after its work was written."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or the reader went away
            pass
    os._exit(code)
