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
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from nlp_transfer.errors import ConfigError, ModelError
from nlp_transfer.inference.onnx import ONNX_FILE
from nlp_transfer.inference.onnx_optimize import LEGACY_OPSET, export_optimized, optimizer_model_type, select_int8, to_fp16
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
PRECISIONS = ("fp32", "fp16")
OPSET = 18  # the dynamo exporter's own opset (converting it down breaks some graphs)
DEFAULT_AGREEMENT = 0.995  # int8: share of validation texts whose label the int8 graph must keep
MAX_CALIBRATION_TEXTS = 256  # static quantization's calibration texts (its calibrator keeps every activation)
MAX_AGREEMENT_TEXTS = 1000  # validation texts the int8 candidates are compared on
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
    max_logit_difference: float  # the fp32 graph against PyTorch (fp32) logits on the probe batches
    quantize: str | None
    size_bytes: int
    optimized: dict | None = None  # onnxruntime's transformer optimizer: fused op counts (None: plain export)
    int8: dict | None = None  # the int8 choice: method, agreement reached, target, nodes left in fp32, candidates
    precision: str = "fp32"


def export_onnx(
    run_dir: str | Path,
    output_dir: str | Path,
    quantize: str | None = None,
    overwrite: bool = False,
    tolerance: float = 1e-4,
    optimize: bool = True,
    agreement: float = DEFAULT_AGREEMENT,
    calibration_texts: Sequence[str] | None = None,
    precision: str = "fp32",
    say: Callable[[str], None] = lambda _: None,
) -> OnnxExportResult:
    """Write ``run_dir``'s classifier as ONNX (tokens -> logits, dynamic batch and sequence axes) with its
    tokenizer and manifest into ``output_dir``.

    BERT-style encoders go through onnxruntime's transformer optimizer unless ``optimize=False`` (fused
    attention, LayerNorm, GELU; see :mod:`nlp_transfer.inference.onnx_optimize`). The fp32 graph's logits
    are checked against PyTorch's (fp32) on two probe batches of different shapes before anything is
    written; the directory appears whole or not at all. ``quantize="int8"``: dynamic or static (calibrated)
    quantization, with the most sensitive nodes kept in fp32 as needed, whichever is fastest while keeping
    at least ``agreement`` of the fp32 labels on ``calibration_texts`` (default: the run's validation
    texts); the agreement reached goes into the manifest. ``precision="fp16"``: a float16 graph for GPU
    execution providers. Adapter runs are refused: merge them first (``nlp-transfer export RUN MERGED --merge``)."""
    from nlp_transfer.training.rundir import atomic_directory

    require_extra("onnx", "exporting to ONNX", ModelError)
    src, out = check_run_dir(run_dir), Path(output_dir)
    manifest = read_manifest(src)
    _check_export_args(src, out, manifest, quantize, precision, agreement, overwrite)
    model = TextClassifier.from_pretrained(src).float().eval()  # fp32 graph (a bf16 backbone is widened)
    tokenizer = load_tokenizer(str(src))
    if quantize and calibration_texts is None:
        calibration_texts = _validation_texts(src)
    probes = [dict(tokenizer(texts, padding=True, return_tensors="pt")) for texts in _PROBES]
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in probes[0]]
    with atomic_directory(out) as tmp:
        path = tmp / ONNX_FILE
        optimized = _fp32_graph(model, probes, names, path, optimize)
        diff = _check_onnx(model, path, probes, names)
        if not diff <= tolerance:
            raise ModelError(f"the ONNX model's logits differ from PyTorch's by {diff:.2e} (more than {tolerance:g}); nothing was written")
        int8 = None
        if quantize == "int8":
            int8 = _int8(path, model, tokenizer, names, calibration_texts, agreement, say, manifest.eval_batch_size or 32)
        elif precision == "fp16":
            _fp16(path)
        tokenizer.save_pretrained(tmp)
        onnx_meta = {
            "file": ONNX_FILE,
            "inputs": names,
            "opset": OPSET if optimized is None else LEGACY_OPSET,
            "quantize": quantize,
            "precision": "int8" if quantize else precision,
            "exporter": f"torch.onnx.export(dynamo={optimized is None}), torch {torch.__version__}",
            "optimizer": optimized,
            "int8": int8,
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
    return OnnxExportResult(out, diff, quantize, size, optimized, int8, "int8" if quantize else precision)


def _check_export_args(src: Path, out: Path, manifest, quantize, precision, agreement, overwrite) -> None:
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
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'; use {', '.join(PRECISIONS)}")
    if quantize and precision != "fp32":
        raise ConfigError(f"--quantize {quantize} and --precision {precision} exclude each other; choose one")
    if not 0 < agreement <= 1:
        raise ConfigError(f"--agreement {agreement} is not a share; use a number in (0, 1], e.g. 0.995")
    if out.exists() and not overwrite:
        raise ConfigError(f"output directory '{out}' already exists; pass --overwrite or choose another")
    if out.resolve() == src.resolve():
        raise ConfigError("the ONNX export must go to another directory than the run")


def _fp32_graph(model: TextClassifier, probes: list[dict], names: list[str], path: Path, optimize: bool) -> dict | None:
    """The fp32 graph at ``path``: optimized where onnxruntime's BERT fusions apply (and ``optimize``), else torch's
    dynamo export as it comes. Returns the optimizer's record, or None."""
    wrapper = _LogitsOnly(model, names)
    if optimize and optimizer_model_type(model) == "bert":
        return export_optimized(model, wrapper, probes[0], names, path)
    _torch_to_onnx(wrapper, probes[0], names, path)
    return None


def _validation_texts(src: Path) -> list[str]:
    """The run's validation texts (its recipe's data, split as training split it): the int8 calibration and agreement set."""
    from nlp_transfer.config import RecipeConfig
    from nlp_transfer.data.loading import load_data

    if not (src / "recipe.yaml").is_file():
        raise ConfigError(f"'{src}' has no recipe.yaml to find its validation texts; pass --calibration-data FILE for the int8 choice")
    data = load_data(RecipeConfig.from_yaml(src / "recipe.yaml").data)
    split = data.splits.get("validation")
    if split is None or len(split) == 0:
        raise ConfigError(f"the run '{src}' has no validation split; pass --calibration-data FILE for the int8 choice")
    return list(split["text"])


def _int8(path: Path, model: TextClassifier, tokenizer, names: list[str], texts, target: float, say, batch_size: int) -> dict:
    """Replace the fp32 graph at ``path`` with the int8 graph :func:`select_int8` chooses on ``texts``, batched as
    the predictor batches them (longest first, the run's evaluation batch size): dynamic quantization scales each
    batch's activations, so a label can depend on the batch a text runs in."""
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if len(texts) < 8:
        raise ConfigError(f"{len(texts)} calibration texts; the int8 choice needs at least 8 (ideally a few hundred)")
    rng = np.random.default_rng(0)
    texts = [texts[i] for i in sorted(rng.permutation(len(texts))[:MAX_AGREEMENT_TEXTS])]
    max_length = int(model.meta.get("max_length") or 128)

    def batches(chunk: list[str]) -> list[dict]:
        lengths = [len(ids) for ids in tokenizer(chunk, truncation=True, max_length=max_length)["input_ids"]]
        chunk = [chunk[i] for i in np.argsort([-n for n in lengths], kind="stable")]
        out = []
        for i in range(0, len(chunk), batch_size):
            enc = tokenizer(chunk[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="np")
            out.append({n: np.asarray(enc[n], dtype=np.int64) for n in names})
        return out

    import onnx

    thresholds = getattr(model, "thresholds", None)
    fp32 = path.with_name("model-fp32.onnx")
    graph = onnx.load(str(path))
    del graph.graph.value_info[:]  # the dynamo exporter's recorded shapes trip the quantizer's shape inference; it infers its own
    onnx.save(graph, str(fp32))
    path.unlink()
    try:
        return select_int8(
            fp32,
            path,
            batches(texts[:MAX_CALIBRATION_TEXTS]),
            batches(texts),
            lambda logits: model.task.decide(logits, thresholds),
            target,
            say,
        )
    finally:
        fp32.unlink(missing_ok=True)


def _fp16(path: Path) -> None:
    fp32 = path.with_name("model-fp32.onnx")
    path.replace(fp32)
    try:
        to_fp16(fp32, path)
    finally:
        fp32.unlink(missing_ok=True)


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
