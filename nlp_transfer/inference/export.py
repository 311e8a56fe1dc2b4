"""Exporting a run: ``merge_run`` folds an adapter run's adapter into the base weights; ``export_onnx``
writes the classifier as ONNX for onnxruntime (see :mod:`nlp_transfer.inference.onnx`).

    merge_run("runs/rt-minilm-lora", "runs/rt-minilm-lora-merged")
    export_onnx("runs/rt-minilm-full", "runs/rt-minilm-onnx", quantize="int8")

The merged run is an ordinary full run: ``load_run`` reads it without the base checkpoint, and
where pooling and head are the architecture's own it is saved in that architecture's
``XForSequenceClassification`` layout, so plain ``AutoModelForSequenceClassification`` loads it
too. Its manifest's ``merged_adapter`` records where it came from. The merged model's logits
are compared with the adapter run's on a probe batch before anything is written; the output
directory appears whole (written beside it, then renamed) or not at all.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import uuid
from pathlib import Path

import torch

from nlp_transfer.errors import ConfigError, ModelError
from nlp_transfer.inference.onnx import ONNX_FILE
from nlp_transfer.inference.predictor import check_run_dir
from nlp_transfer.manifest import read_manifest, write_manifest
from nlp_transfer.models.adapters import merge
from nlp_transfer.models.classifier import TextClassifier
from nlp_transfer.models.hub import load_tokenizer
from nlp_transfer.reporting.card import write_model_card
from nlp_transfer.utils.extras import require_extra

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
        raise ConfigError(
            f"'{src}' is not an adapter run (its weights are already whole); --merge applies to runs "
            "trained with transfer.mode lora, dora or ia3"
        )
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
        raise ModelError(
            f"the merged model's logits differ from the adapter run's by {diff:.2e} (more than {tolerance:g}); nothing was written"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(tmp, tokenizer, precision=manifest.precision, eval_batch_size=manifest.eval_batch_size, name=manifest.name)
        for f in [*RUN_FILES, *(p.name for p in src.glob("*.png"))]:
            if (src / f).is_file():
                shutil.copy2(src / f, tmp / f)
        write_model_card(tmp)  # the merged model's card: its library, loading and provenance
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return MergeResult(out, diff, read_manifest(out).transformers_class)


# ---- ONNX ----------------------------------------------------------------------------------
QUANTIZATIONS = ("int8",)
OPSET = 18  # the dynamo exporter's own opset (converting it down breaks some graphs)
_PROBES = (
    ["a probe sentence for the export check", "short"],
    ["three texts of different lengths", "a second, somewhat longer probe text for the check", "x"],
)


class _LogitsOnly(torch.nn.Module):
    """The classifier's forward from token tensors to logits: what the ONNX graph computes."""

    def __init__(self, model: TextClassifier, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors):
        return self.model(**dict(zip(self.names, tensors)))["logits"].float()


@dataclasses.dataclass
class OnnxExportResult:
    output_dir: Path
    max_logit_difference: float  # ONNX against PyTorch (fp32) logits on the probe batches
    quantize: str | None
    size_bytes: int


def export_onnx(
    run_dir: str | Path, output_dir: str | Path, quantize: str | None = None, overwrite: bool = False, tolerance: float = 1e-4
) -> OnnxExportResult:
    """Write ``run_dir``'s classifier as ONNX (tokens -> logits, dynamic batch and sequence axes) with its
    tokenizer and manifest into ``output_dir``; ``quantize="int8"``: dynamic int8 quantization of the weights
    (onnxruntime's ``quantize_dynamic``, a scale per output channel). The fp32 graph's logits are checked against PyTorch's (fp32) on two
    probe batches of different shapes before anything is written; the directory appears whole or not at all.
    Adapter runs are refused: merge them first (``nlp-transfer export RUN MERGED --merge``)."""
    from nlp_transfer.training.rundir import atomic_directory

    require_extra("onnx", "exporting to ONNX", ModelError)
    src, out = check_run_dir(run_dir), Path(output_dir)
    manifest = read_manifest(src)
    if manifest.backend == "onnx":
        raise ConfigError(
            f"'{src}' is already an ONNX export; export the PyTorch run it came from "
            f"({(manifest.onnx or {}).get('source_run', 'see its manifest')})"
        )
    if manifest.adapter is not None:
        raise ConfigError(
            f"'{src}' is an adapter run ({manifest.adapter.get('method', 'peft')}); merge it first: "
            f"nlp-transfer export {src} MERGED --merge, then nlp-transfer export MERGED OUT --onnx"
        )
    if quantize not in (None, *QUANTIZATIONS):
        raise ConfigError(f"unknown quantization '{quantize}'; use {', '.join(QUANTIZATIONS)}")
    if out.exists() and not overwrite:
        raise ConfigError(f"output directory '{out}' already exists; pass --overwrite or choose another")
    if out.resolve() == src.resolve():
        raise ConfigError("the ONNX export must go to another directory than the run")
    model = TextClassifier.from_pretrained(src).float().eval()  # fp32 graph (a bf16 backbone is widened)
    tokenizer = load_tokenizer(str(src))
    probes = [dict(tokenizer(texts, padding=True, return_tensors="pt")) for texts in _PROBES]
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in probes[0]]
    with atomic_directory(out) as tmp:
        path = tmp / ONNX_FILE
        _torch_to_onnx(_LogitsOnly(model, names), probes[0], names, path)
        diff = _check_onnx(model, path, probes, names)
        if not diff <= tolerance:
            raise ModelError(f"the ONNX model's logits differ from PyTorch's by {diff:.2e} (more than {tolerance:g}); nothing was written")
        if quantize == "int8":
            diff = _quantize_int8(path, model, probes, names)
        tokenizer.save_pretrained(tmp)
        onnx_meta = {
            "file": ONNX_FILE,
            "inputs": names,
            "opset": OPSET,
            "quantize": quantize,
            "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
            "max_logit_difference": diff,
            "source_run": str(src),
        }
        note = "an ONNX export: load with nlp_transfer.load_run (onnxruntime) or onnxruntime itself"
        write_manifest(
            tmp,
            dataclasses.replace(manifest, backend="onnx", onnx=onnx_meta, precision="no", transformers_class=None, transformers_note=note),
        )
        for f in [*RUN_FILES, *(p.name for p in src.glob("*.png"))]:
            if (src / f).is_file():
                shutil.copy2(src / f, tmp / f)
        write_model_card(tmp)  # the export's own card: ONNX, loaded with load_run or onnxruntime
        size = path.stat().st_size
    return OnnxExportResult(out, diff, quantize, size)


def _torch_to_onnx(wrapper: torch.nn.Module, probe: dict, names: list[str], path: Path) -> None:
    """torch's dynamo exporter, batch and sequence axes dynamic; one file (weights inside) below 2 GB."""
    import warnings

    from nlp_transfer.utils.logs import quiet

    dynamic = torch.export.Dim.DYNAMIC  # ranges inferred (a named Dim fails on the position-embedding bound)
    big = sum(p.numel() * 4 for p in wrapper.parameters()) > 1.8e9
    # optimize: constant folding leaves each Linear a MatMul on a constant weight, which onnxruntime runs faster
    # and its int8 quantizer can quantize (unfolded, the weights pass through a Transpose and stay fp32).
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" and the like
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            quiet(
                torch.onnx.export,
                wrapper,
                tuple(probe[n] for n in names),
                str(path),
                dynamo=True,
                opset_version=OPSET,
                input_names=names,
                output_names=["logits"],
                dynamic_shapes=(tuple({0: dynamic, 1: dynamic} for _ in names),),
                external_data=big,
                verbose=False,
                optimize=True,
            )
        except Exception as e:  # the exporter's own error types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise ModelError(
                f"torch.onnx could not export this model ({type(e).__name__}: {first}); predict with the PyTorch run instead"
            ) from None
        finally:
            exporter_log.setLevel(level)


def _onnx_logits(path: Path, probes: list[dict], names: list[str]) -> list:
    from nlp_transfer.inference.onnx import OnnxRunner

    runner = OnnxRunner(path)
    return [runner(p) for p in probes]


@torch.no_grad()
def _check_onnx(model: TextClassifier, path: Path, probes: list[dict], names: list[str]) -> float:
    """Largest absolute logit difference between the ONNX graph and PyTorch (fp32) over the probe batches."""
    ours = [model(**{n: p[n] for n in names})["logits"].float().numpy() for p in probes]
    return max(float(abs(a - b).max()) for a, b in zip(ours, _onnx_logits(path, probes, names)))


def _quantize_int8(path: Path, model: TextClassifier, probes: list[dict], names: list[str]) -> float:
    """Replace ``path`` with its dynamically int8-quantized version; the logit difference that leaves (not checked:
    quantization changes logits by design; `python -m benchmarks ship` measures agreement and accuracy)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = path.with_name("model-fp32.onnx")
    graph = onnx.load(str(path))
    del graph.graph.value_info[:]  # the exporter's recorded shapes trip the quantizer's shape inference; it infers its own
    onnx.save(graph, str(fp32))
    path.unlink()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs every MatMul it leaves alone (INFO) and generic advice (WARNING) to the root logger
    try:
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True)  # per output channel: closer to fp32
    except Exception as e:  # onnxruntime's own error types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ModelError(f"onnxruntime could not quantize the model ({type(e).__name__}: {first}); export without --quantize") from None
    finally:
        root.setLevel(level)
        fp32.unlink(missing_ok=True)
    return _check_onnx(model, path, probes, names)
