"""The run directory, written once, atomically: a hidden sibling filled, then renamed.

It holds the model and tokenizer (``save_pretrained`` layout) with the run manifest
(:mod:`nlp_transfer.manifest`), the resolved recipe (``recipe.yaml``), the results
(``metrics.json``: per epoch and final test), the report (``summary.md`` with its plots) and
the model card (``README.md``, :mod:`nlp_transfer.reporting.card`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from pathlib import Path

import torch

from nlp_transfer.reporting.card import write_model_card
from nlp_transfer.reporting.report import write_summary
from nlp_transfer.training.distill import manifest_record
from nlp_transfer.utils.environment import library_versions, machine


def environment_info(precision: str, accelerator, seed: int | None = None) -> dict:
    """Library versions, hardware and launch settings: what a rerun needs to match."""
    return {
        "seed": seed,
        **machine(),
        **library_versions(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(accelerator.device),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda_version": torch.version.cuda,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "distributed_type": str(accelerator.distributed_type.value),
        "num_processes": accelerator.num_processes,
        "mixed_precision": precision,
    }


def run_metrics(cfg, result, data, metric: str, environment: dict) -> dict:
    """The content of ``metrics.json``."""
    return {
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
        **({"calibration": result.calibration} if getattr(result, "calibration", None) else {}),
        **({"distillation": result.distillation} if getattr(result, "distillation", None) else {}),
        "data": data.summary(),
        "environment": environment,
    }


@contextlib.contextmanager
def atomic_directory(out: Path):
    """Yield a hidden sibling of ``out`` to fill; on success it becomes ``out`` (replacing an old one), on any
    failure it is removed: the directory is complete or absent."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        yield tmp
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


def write_run_dir(
    cfg, result, model, tokenizer, data, precision: str, accelerator, metric: str, calibration: dict | None = None, plots: bool = True
) -> None:
    """Everything into a hidden sibling, then a rename: a run directory is complete or absent. ``calibration``:
    the parameters fitted on validation, for the manifest; ``plots=False``: summary.md without its PNGs."""
    distilled = {"distillation": manifest_record(result.distillation)} if getattr(result, "distillation", None) else {}
    with atomic_directory(result.output_dir) as tmp:
        model.save_pretrained(
            tmp,
            tokenizer,
            precision=precision,
            eval_batch_size=cfg.train.eval_batch_size,
            name=cfg.name,
            calibration=calibration,
            **distilled,
        )
        recipe = cfg.replace("train.resume=null")  # reruns start afresh
        (tmp / "recipe.yaml").write_text(recipe.to_yaml())
        metrics = run_metrics(cfg, result, data, metric, environment_info(precision, accelerator, cfg.train.seed))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        write_summary(tmp, cfg, metrics, plots=plots)
        write_model_card(tmp, recipe.to_dict(), metrics)
