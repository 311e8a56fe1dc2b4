"""The model card: ``README.md`` of a run directory, in the Hugging Face Hub's format.

YAML front matter (``library_name``, ``pipeline_tag``, ``base_model``, ``tags``, ``datasets``,
``license``, ``model-index`` with the test metrics), built with ``huggingface_hub``'s
:class:`~huggingface_hub.ModelCardData` and :class:`~huggingface_hub.EvalResult`, then a body
that says what the model is, how well it did (validation and test), how calibrated its
probabilities are, what it was trained on and with, how to load it, and its limits.

Written with every run (:mod:`nlp_transfer.training.rundir`) and every export
(:mod:`nlp_transfer.inference.export`), from the manifest, ``metrics.json`` and the recipe, so a
run pushed to the Hub (``nlp-transfer push``) shows its card.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from nlp_transfer.data.catalog import DATASETS
from nlp_transfer.manifest import RunManifest, read_manifest
from nlp_transfer.models.catalog import HUB_IDS, LICENSES, catalog_name
from nlp_transfer.reporting.markdown import loading_instructions
from nlp_transfer.reporting.report import calibration_lines
from nlp_transfer.tasks import get_task

CARD_FILE = "README.md"
LIBRARY_NAME = "nlp-transfer"
# metrics.json key -> the name shown on the Hub, per task (model-index holds the test values)
METRIC_NAMES = {
    "accuracy": "Accuracy",
    "f1_macro": "Macro F1",
    "precision_macro": "Macro precision",
    "recall_macro": "Macro recall",
    "f1_micro": "Micro F1",
    "subset_accuracy": "Subset accuracy",
    "hamming_loss": "Hamming loss",
    "mse": "MSE",
    "mae": "MAE",
    "pearson": "Pearson",
    "spearman": "Spearman",
}
PIPELINE_TAG = "text-classification"


def base_model(manifest: RunManifest, recipe: dict) -> tuple[str | None, str | None, str]:
    """(hub id, license, how the card names it) of the checkpoint the run started from: a catalog name's hub
    id, a hub id as given, or None for a local directory outside the catalog (named in the body only)."""
    model = recipe.get("model") or {}
    adapter = manifest.adapter or manifest.merged_adapter or {}
    given = model.get("name_or_path") or adapter.get("base_checkpoint") or manifest.source_checkpoint or ""
    name = catalog_name(given)
    if name is not None:
        return HUB_IDS[name], LICENSES.get(name), f"`{HUB_IDS[name]}` (catalog name `{name}`)"
    if given and not Path(given).expanduser().exists() and given.count("/") == 1 and not given.startswith((".", "/", "~")):
        return given, None, f"`{given}`"
    return None, None, f"the local checkpoint `{given}`" if given else "an unnamed checkpoint"


def dataset_id(recipe: dict) -> tuple[str | None, str]:
    """(hub dataset id or None, the name shown) of the recipe's data."""
    data = recipe.get("data") or {}
    source = data.get("source")
    if source and source in DATASETS:
        return None, f"`{source}` (nlp-transfer catalog: {DATASETS[source][1]})"
    if source and not Path(source).expanduser().exists() and Path(source).suffix == "" and source.count("/") <= 1:
        return source, f"`{source}` (Hugging Face Hub)"
    files = [data.get(k) for k in ("train_file", "validation_file", "test_file") if data.get(k)]
    shown = source or ", ".join(Path(f).name for f in files) or "local files"
    return None, f"`{shown}` (local)"


def library_name(manifest: RunManifest) -> str:
    """transformers where plain ``AutoModelForSequenceClassification`` loads the run, onnx for an ONNX export,
    else nlp-transfer (custom pooling or head, adapters on a base that is not saved)."""
    if manifest.backend == "onnx":
        return "onnx"
    return "transformers" if manifest.transformers_class else LIBRARY_NAME


def card_data(manifest: RunManifest, metrics: dict, recipe: dict):
    """The front matter: :class:`huggingface_hub.ModelCardData` with one :class:`EvalResult` per test metric."""
    from huggingface_hub import EvalResult, ModelCardData

    task = get_task(metrics.get("task", manifest.task))
    base, license_, _ = base_model(manifest, recipe)
    dataset, _ = dataset_id(recipe)
    data = recipe.get("data") or {}
    dataset_type = dataset or data.get("source") or "local"
    files = [Path(data[k]).name for k in ("train_file", "validation_file", "test_file") if data.get(k)]
    dataset_name = dataset or data.get("source") or ", ".join(files) or "local"
    name = manifest.name or recipe.get("name") or "nlp-transfer run"
    test = metrics.get("test") or {}
    results = [
        EvalResult(
            task_type=PIPELINE_TAG,
            task_name=f"Text classification ({task.name.replace('_', '-')})",
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_split="test",
            metric_type=key,
            metric_name=METRIC_NAMES.get(key, key),
            metric_value=float(test[key]),
        )
        for key in task.log_keys
        if isinstance(test.get(key), (int, float))
    ]
    mode = (recipe.get("transfer") or {}).get("mode")
    tags = ["nlp-transfer", PIPELINE_TAG, task.name.replace("_", "-")]
    tags += [
        t for t in (mode and f"transfer-{mode}", manifest.backend == "onnx" and "onnx", manifest.merged_adapter and "merged-adapter") if t
    ]
    return ModelCardData(
        library_name=library_name(manifest),
        pipeline_tag=PIPELINE_TAG,
        base_model=base,
        license=license_,
        tags=tags,
        datasets=[dataset] if dataset else None,
        model_name=name,
        eval_results=results or None,
    )


def _results_lines(metrics: dict, task) -> list[str]:
    val, test = metrics.get("validation") or {}, metrics.get("test") or {}
    rows = [k for k in task.log_keys if isinstance(test.get(k), (int, float)) or isinstance(val.get(k), (int, float))]
    if not rows:
        return []
    cell = lambda d, k: f"{d[k]:.4f}" if isinstance(d.get(k), (int, float)) else "-"
    lines = ["## Results", "", f"Best epoch {metrics.get('best_epoch')} by validation `{metrics.get('metric_for_best')}`.", ""]
    lines += ["| metric | validation | test |", "|---|---:|---:|"]
    lines += [f"| {METRIC_NAMES.get(k, k)} | {cell(val, k)} | {cell(test, k)} |" for k in rows]
    return lines + [""]


def _data_lines(metrics: dict, manifest: RunManifest, shown: str) -> list[str]:
    data = metrics.get("data") or {}
    sizes = data.get("sizes") or {}
    lines = ["## Data", "", f"Trained and evaluated on {shown}.", ""]
    if sizes:
        lines += ["| split | examples |", "|---|---:|", *(f"| {s} | {n:,} |" for s, n in sizes.items()), ""]
    counts = data.get("label_counts")
    if counts:
        splits = list(counts)
        lines += ["Examples per label:", "", "| label | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
        lines += [f"| {label} | " + " | ".join(f"{counts[s].get(label, 0):,}" for s in splits) + " |" for label in manifest.labels]
        lines.append("")
    elif manifest.task != "regression":
        lines += [f"Labels: {', '.join(f'`{label}`' for label in manifest.labels)}.", ""]
    return lines


def _hardware_lines(metrics: dict) -> list[str]:
    timing, env = metrics.get("timing") or {}, metrics.get("environment") or {}
    if not timing and not env:
        return []
    device = env.get("cuda") or env.get("device") or "unknown device"
    lines = ["## Training time and hardware", ""]
    if timing:
        lines.append(
            f"- wall time {timing.get('total_seconds', 0):.1f}s (training {timing.get('train_seconds', 0):.1f}s, "
            f"encoding {timing.get('encode_seconds', 0):.1f}s); peak memory {timing.get('peak_memory_mb')} MB"
        )
    if env:
        lines.append(
            f"- {env.get('num_processes', 1)} process(es) on {device} ({env.get('gpu_count', 0)} GPU(s)), precision "
            f"`{env.get('mixed_precision')}`, torch {env.get('torch')}, transformers {env.get('transformers', '?')}, seed {env.get('seed')}"
        )
    return lines + [""]


def _limitations(manifest: RunManifest, recipe: dict) -> list[str]:
    model = recipe.get("model") or {}
    lines = [
        "## Limitations",
        "",
        "- Measured on one held-out test split of the data above; texts from another domain, time or style can score lower.",
        f"- Inputs longer than {manifest.max_length} tokens are "
        + (
            "cut into windows whose logits are aggregated (by `load_run`; other loaders truncate)."
            if model.get("chunking")
            else "truncated."
        ),
    ]
    if manifest.calibration:
        lines.append(
            "- The probability calibration was fitted on the validation split; `load_run` applies it, plain transformers does not."
        )
    if manifest.task == "multi_label":
        lines.append("- Multi-label decisions use the thresholds in `nlp_transfer.json`; plain transformers gives raw sigmoid scores.")
    if manifest.adapter:
        lines.append("- An adapter run: the base checkpoint is not in this directory and must be available to load it.")
    return lines + [""]


def _export_lines(manifest: RunManifest) -> list[str]:
    if manifest.backend == "onnx":
        o = manifest.onnx or {}
        quant = f", weights quantized to {o['quantize']}" if o.get("quantize") else ""
        return [
            f"This directory is an ONNX export (`{o.get('file')}`, opset {o.get('opset')}{quant}) of the run "
            f"`{o.get('source_run')}`; its logits differ from the PyTorch run's by at most {o.get('max_logit_difference', 0):.2e} "
            "on the export's probe batches. The metrics below are the source run's.",
            "",
        ]
    if manifest.merged_adapter:
        return [
            f"This directory holds a {manifest.merged_adapter.get('method', 'peft')} adapter run with its adapter merged into the "
            "base weights (an ordinary full model). The metrics below are the adapter run's.",
            "",
        ]
    return []


def card_text(manifest: RunManifest, metrics: dict, recipe: dict) -> str:
    """The whole card: front matter and body."""
    task = get_task(metrics.get("task", manifest.task))
    _, _, base_shown = base_model(manifest, recipe)
    _, data_shown = dataset_id(recipe)
    transfer = recipe.get("transfer") or {}
    name = manifest.name or recipe.get("name") or "nlp-transfer run"
    what = {"single_label": "single-label text classifier", "multi_label": "multi-label text classifier", "regression": "text regressor"}
    body = [
        f"# {name}",
        "",
        f"A {what.get(task.name, 'text classifier')} fine-tuned from {base_shown} with "
        f"[nlp-transfer](https://pypi.org/project/nlp-transfer/) (transfer mode `{transfer.get('mode')}`, pooling "
        f"`{manifest.pooling}`, head `{manifest.head}`) on {data_shown}.",
        "",
        *_export_lines(manifest),
        *_results_lines(metrics, task),
        *calibration_lines(metrics.get("calibration") or {}),
        *_data_lines(metrics, manifest, data_shown),
        "## How to use",
        "",
        loading_instructions(manifest),
        "",
        *_hardware_lines(metrics),
        *_limitations(manifest, recipe),
        "## Training recipe",
        "",
        "The resolved recipe (`recipe.yaml`; `nlp-transfer train --config recipe.yaml output.dir=NEW_DIR` trains it again):",
        "",
        "```yaml",
        yaml.safe_dump(recipe, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    data = card_data(manifest, metrics, recipe)
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)


def write_model_card(run_dir: str | Path, recipe: dict | None = None, metrics: dict | None = None) -> Path:
    """Write ``README.md`` into ``run_dir`` (holding its manifest); ``recipe`` and ``metrics`` default to the
    directory's ``recipe.yaml`` and ``metrics.json`` (an export carries its source run's). Returns the path."""
    from huggingface_hub import ModelCard

    d = Path(run_dir)
    manifest = read_manifest(d)
    if recipe is None:
        path = d / "recipe.yaml"
        recipe = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    if metrics is None:
        path = d / "metrics.json"
        metrics = json.loads(path.read_text()) if path.is_file() else {}
    path = d / CARD_FILE
    ModelCard(card_text(manifest, metrics, recipe)).save(path)
    return path
