"""Resumable checkpoints: save during training, keep the newest K, resume where a run stopped.

Where they live: the run directory (``output.dir``) is written once, atomically, when training
ends, so checkpoints go beside it, in ``output.checkpoint_dir`` (default
``<output.dir>.checkpoints``), and that folder is deleted once the run directory is complete.

One checkpoint is one folder ``step-00000040/`` (the optimiser step it was taken after):

* accelerate's ``save_state``: model, optimiser, scheduler, grad scaler (fp16), the RNG
  states of every process and the gradient-accumulation step;
* ``loop_<rank>.json`` per process: epoch, batches of that epoch already trained, history,
  best metric and epoch, early-stopping counter, running loss and counters;
* ``best.safetensors``: the best epoch's trained weights (the run keeps them at the end);
* ``checkpoint.json``, written last: the recipe, the precision, the number of processes and
  the size of every file, checked when the checkpoint is loaded.

Atomicity: everything is written into ``.tmp-step-...``, flushed to disk (fsync), then
renamed to ``step-...``. A folder with the final name is therefore complete; a crash leaves
only a ``.tmp-`` folder, which resume ignores and the next save removes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path

from nlp_transfer.errors import ConfigError, TrainingError
from nlp_transfer.training.state import LoopState

MANIFEST = "checkpoint.json"
BEST = "best.safetensors"
FORMAT = 1
_NAME = re.compile(r"^step-(\d{8})$")
# Recipe keys that may differ between the interrupted and the resumed run.
_FREE_KEYS = {
    "train.resume",
    "train.save_checkpoints",
    "train.save_every_steps",
    "train.keep_checkpoints",
    "train.log_every",
    "train.report_to",
    "train.num_threads",
    "output.dir",
    "output.overwrite",
    "output.checkpoint_dir",
}


def checkpoint_root(cfg) -> Path:
    if cfg.output.checkpoint_dir:
        return Path(cfg.output.checkpoint_dir)
    out = Path(cfg.output.dir)
    return out.parent / f"{out.name}.checkpoints"


def enabled(cfg) -> bool:
    return bool(cfg.train.save_checkpoints or cfg.train.save_every_steps)


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (``.tmp-`` folders are not listed)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def prune(root: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints and any leftover temporary folders."""
    root = Path(root)
    gone = list_checkpoints(root)[:-keep] if keep > 0 else list_checkpoints(root)
    if root.is_dir():
        gone += [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def _fsync_tree(path: Path) -> None:
    """Flush every file under ``path`` and the folders themselves to disk."""
    for dirpath, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _comparable(recipe: dict) -> dict:
    flat = {}
    for section, values in recipe.items():
        if isinstance(values, dict):
            flat.update({f"{section}.{k}": v for k, v in values.items()})
        else:
            flat[section] = values
    return {k: v for k, v in flat.items() if k not in _FREE_KEYS}


def save_checkpoint(accelerator, root: Path, state: LoopState, best_state: dict | None, cfg, precision: str, keep: int) -> Path:
    """Write a checkpoint of the current step (every process calls this), then prune to ``keep``."""
    root = Path(root)
    final = root / f"step-{state.step:08d}"
    tmp = root / f".tmp-step-{state.step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    (tmp / f"loop_{accelerator.process_index}.json").write_text(json.dumps(asdict(state)))
    if accelerator.is_main_process and best_state is not None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in best_state.items()}, str(tmp / BEST))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {
            "format": FORMAT,
            "step": state.step,
            "epoch": state.epoch,
            "batches_done": state.batches_done,
            "num_processes": accelerator.num_processes,
            "precision": precision,
            "recipe": cfg.to_dict(),
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        _fsync_tree(tmp)
        if final.exists():  # the same step saved again (a resumed run): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        prune(root, keep)
    accelerator.wait_for_everyone()
    return final


def resolve_resume(cfg) -> Path:
    """The checkpoint folder ``train.resume`` names ('latest' or a path); one-line errors otherwise."""
    root = checkpoint_root(cfg)
    if cfg.train.resume == "latest":
        found = list_checkpoints(root)
        if not found:
            raise ConfigError(
                f"train.resume=latest but '{root}' holds no complete checkpoint; run without --resume (checkpoints "
                "are written with train.save_checkpoints=true or train.save_every_steps=N)"
            )
        return found[-1]
    path = Path(cfg.train.resume)
    if not path.is_dir():
        raise ConfigError(f"train.resume='{path}' is not a checkpoint folder; pass 'latest' or a step-NNNNNNNN folder under {root}")
    return path


def read_manifest(path: Path) -> dict:
    """The manifest of a checkpoint, after checking that every file it lists is there, whole."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise TrainingError(
            f"checkpoint '{path}' is incomplete or damaged (no readable {MANIFEST}); "
            "resume from an older one (--resume PATH) or start again"
        ) from None
    for name, size in files.items():
        p = path / name
        if not p.is_file() or p.stat().st_size != size:
            raise TrainingError(
                f"checkpoint '{path}' is damaged ({name} is missing or truncated); resume from an older one (--resume PATH) or start again"
            )
    return manifest


def check_checkpoint(path: Path, cfg, precision: str, num_processes: int) -> dict:
    """Fail early, in one line, when ``path`` cannot continue this run: damaged, another format,
    another number of processes, another precision or another recipe."""
    manifest = read_manifest(path)
    if manifest.get("format") != FORMAT:
        raise TrainingError(f"checkpoint '{path}' has format {manifest.get('format')}, this version reads {FORMAT}; start again")
    if manifest.get("num_processes") != num_processes:
        raise ConfigError(
            f"checkpoint '{path}' was written by {manifest.get('num_processes')} process(es) but this run has "
            f"{num_processes}; resume with the same launch configuration"
        )
    if manifest.get("precision") != precision:
        raise ConfigError(
            f"checkpoint '{path}' was trained with precision {manifest.get('precision')}, this run uses "
            f"{precision}; set train.mixed_precision={manifest.get('precision')}"
        )
    then, now = _comparable(manifest.get("recipe") or {}), _comparable(cfg.to_dict())
    for key in sorted(then.keys() | now.keys()):
        if then.get(key) != now.get(key):
            raise ConfigError(
                f"checkpoint '{path}' belongs to a different recipe: {key} was {then.get(key)!r}, now {now.get(key)!r}; "
                "resume with the recipe that started the run"
            )
    return manifest


def load_checkpoint(accelerator, path: Path) -> tuple[LoopState, dict | None]:
    """Restore accelerate's state from ``path`` (checked with :func:`check_checkpoint`); return the
    loop state and the best epoch's weights."""
    try:
        accelerator.load_state(str(path))
        state = LoopState(**json.loads((path / f"loop_{accelerator.process_index}.json").read_text()))
        best_state = None
        if (path / BEST).is_file():
            from safetensors.torch import load_file

            best_state = load_file(str(path / BEST))
    except Exception as e:  # noqa: BLE001 - any failure to read it means the same thing to the user
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrainingError(
            f"checkpoint '{path}' could not be loaded ({first}); resume from an older one (--resume PATH) or start again"
        ) from None
    return state, best_state
