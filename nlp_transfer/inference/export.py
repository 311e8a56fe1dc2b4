"""Exporting a run: ``merge_run`` folds an adapter run's adapter into the base weights.

    merge_run("runs/rt-minilm-lora", "runs/rt-minilm-lora-merged")

The merged run is an ordinary full run: ``load_run`` reads it without the base checkpoint, and
where pooling and head are the architecture's own it is saved in that architecture's
``XForSequenceClassification`` layout, so plain ``AutoModelForSequenceClassification`` loads it
too. Its manifest's ``merged_adapter`` records where it came from. The merged model's logits
are compared with the adapter run's on a probe batch before anything is written; the output
directory appears whole (written beside it, then renamed) or not at all.
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from pathlib import Path

import torch

from nlp_transfer.errors import ConfigError, ModelError
from nlp_transfer.manifest import read_manifest
from nlp_transfer.models.adapters import merge
from nlp_transfer.models.classifier import TextClassifier
from nlp_transfer.models.hub import load_tokenizer
from nlp_transfer.inference.predictor import check_run_dir

# What the run directory holds besides the model: copied as they are (the results belong to the same weights).
RUN_FILES = ("recipe.yaml", "metrics.json", "summary.md")


@dataclasses.dataclass
class MergeResult:
    output_dir: Path
    max_logit_difference: float  # merged against adapter logits on the probe batch (fp32)
    transformers_class: str | None  # set where plain AutoModelForSequenceClassification loads the merged run


def merge_run(run_dir: str | Path, output_dir: str | Path, overwrite: bool = False, tolerance: float = 1e-4) -> MergeResult:
    """Write ``run_dir``'s model with its adapter merged into ``output_dir`` (see the module docstring)."""
    src, out = check_run_dir(run_dir), Path(output_dir)
    manifest = read_manifest(src)
    if manifest.adapter is None:
        raise ConfigError(f"'{src}' is not an adapter run (its weights are already whole); --merge applies to runs "
                          "trained with transfer.mode lora, dora or ia3")
    if out.exists() and not overwrite:
        raise ConfigError(f"output directory '{out}' already exists; pass --overwrite or choose another")
    if out.resolve() == src.resolve():
        raise ConfigError("the merged run must go to another directory than the adapter run")
    model = TextClassifier.from_pretrained(src)
    tokenizer = load_tokenizer(str(src))
    probe = tokenizer(["a probe sentence for the merge check", "short"], padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**probe)["logits"].float()
        adapter = model.meta.pop("adapter")
        model.backbone = merge(model.backbone)
        model.meta["merged_adapter"] = adapter
        after = model(**probe)["logits"].float()
    diff = float((before - after).abs().max())
    if not diff <= tolerance:
        raise ModelError(f"the merged model's logits differ from the adapter run's by {diff:.2e} (more than {tolerance:g}); "
                         "nothing was written")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(tmp, tokenizer, precision=manifest.precision, eval_batch_size=manifest.eval_batch_size,
                              name=manifest.name)
        for f in [*RUN_FILES, *(p.name for p in src.glob("*.png"))]:
            if (src / f).is_file():
                shutil.copy2(src / f, tmp / f)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return MergeResult(out, diff, read_manifest(out).transformers_class)
