"""Faster ONNX graphs: onnxruntime's transformer optimizer on encoders, and int8 chosen against a label-agreement target.

* :func:`export_optimized` (BERT-style encoders: BERT, RoBERTa, XLM-R, ELECTRA): the graph is traced with
  torch's TorchScript exporter on transformers' eager attention (the pattern onnxruntime's fusions match),
  the last layer computing position 0 only where the pooling reads nothing else (``cls``, ``pooler``: the
  predictor's own first-token forward), then ``onnxruntime.transformers.optimizer.optimize_model``
  (``model_type="bert"``, heads and width from the config, ``opt_level=1``: CPU, offline) fuses the
  embeddings with their LayerNorm, each layer's attention into one ``Attention`` op, residual + LayerNorm
  into ``SkipLayerNormalization`` and bias + GELU into ``BiasGelu``. Decoders and other encoders are
  exported as before (torch's dynamo exporter) and left unfused: the optimizer's ``gpt2`` fusions want
  GPT-2's past-key-value graph, which a classifier does not have.
* :func:`select_int8`: candidates are onnxruntime's dynamic quantization (int8 weights per output channel,
  activations quantized on the fly; fused ``Attention`` becomes ``QAttention``) and static QDQ quantization
  (activation scales calibrated on the run's validation texts with ``quantize_static`` and a
  ``CalibrationDataReader``), each first with every quantizable node, then, where label agreement with the
  fp32 graph falls short of the required agreement and the candidate runs faster than the best one that
  reaches it, with the most sensitive groups of nodes left in fp32
  (``nodes_to_exclude``; a group is a contiguous run of quantizable nodes, about one transformer layer;
  its sensitivity is how far quantizing that group alone moves the logits). The fastest candidate that
  reaches the required agreement is kept; what was tried is returned for the manifest.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from nlp_transfer.errors import ModelError

# transformers model types whose layers onnxruntime's "bert" fusions match
BERT_LIKE = ("bert", "roberta", "xlm-roberta", "electra", "camembert")
LEGACY_OPSET = 17
# the ops each quantizer handles on these graphs (dynamic: QAttention, MatMulInteger; static: QDQ around MatMul)
DYNAMIC_OPS = ("MatMul", "Attention", "Gemm")
STATIC_OPS = ("MatMul", "Gemm")
MAX_GROUPS = 8


def optimizer_model_type(model) -> str | None:
    """'bert' where onnxruntime's BERT fusions apply to ``model`` (a TextClassifier), else None."""
    config = getattr(model.backbone, "config", None)
    if model.meta.get("kind", "encoder") != "encoder" or getattr(config, "model_type", None) not in BERT_LIKE:
        return None
    return "bert"


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    """onnxruntime's optimizer and quantizer log every node they leave alone to the root logger."""
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def export_optimized(model, wrapper: torch.nn.Module, probe: dict, names: list[str], path: Path) -> dict:
    """Write the optimized fp32 graph of a BERT-style ``model`` to ``path``; returns what was fused (op counts)."""
    from onnxruntime.transformers.optimizer import optimize_model

    from nlp_transfer.models.fast import speedups

    config = model.backbone.config
    raw = path.with_name("model-traced.onnx")
    previous = config._attn_implementation
    training = model.training
    try:
        model.backbone.set_attn_implementation("eager")
        with speedups(model, dropout=False, attention=False, first_token=True, allocator=False), _quiet_loggers(), torch.no_grad():
            torch.onnx.export(
                wrapper,
                tuple(probe[n] for n in names),
                str(raw),
                dynamo=False,
                opset_version=LEGACY_OPSET,
                input_names=names,
                output_names=["logits"],
                dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
            )
        with _quiet_loggers():
            optimized = optimize_model(
                str(raw),
                model_type="bert",
                num_heads=config.num_attention_heads,
                hidden_size=config.hidden_size,
                opt_level=1,
                use_gpu=False,
            )
            optimized.save_model_to_file(str(path))
    except Exception as e:  # the exporter's and optimizer's own error types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ModelError(f"the optimized ONNX export failed ({type(e).__name__}: {first}); export with --no-optimize") from None
    finally:
        model.train(training)  # the TorchScript exporter leaves the model in training mode
        model.backbone.set_attn_implementation(previous)
        raw.unlink(missing_ok=True)
    stats = optimized.get_fused_operator_statistics()
    return {"model_type": "bert", "opt_level": 1, "fused": {k: int(v) for k, v in stats.items() if v}}


def to_fp16(path: Path, out: Path) -> None:
    """``path`` converted to float16 (inputs and outputs kept as they are): for GPU execution providers."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet_loggers():
        model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(model, str(out))


# ---- int8 ------------------------------------------------------------------------------------
class _Reader:
    """onnxruntime's CalibrationDataReader over pre-tokenized batches."""

    def __init__(self, batches: list[dict]):
        self.batches, self.i = batches, 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return self.batches[self.i - 1]

    def rewind(self):
        self.i = 0


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_graph(path: Path, batches: list[dict]) -> tuple[np.ndarray, float]:
    """Logits of every batch (concatenated) and the seconds the runs took (after one warm-up batch)."""
    s = _session(path)
    s.run(None, batches[0])
    start = time.perf_counter()
    out = [s.run(None, b)[0] for b in batches]
    return np.concatenate(out).astype(np.float32), time.perf_counter() - start


def quantizable_nodes(path: Path, ops: Sequence[str]) -> list[str]:
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type in ops]


def _quantize(method: str, fp32: Path, out: Path, calibration: list[dict], exclude: Sequence[str], only: Sequence[str] | None) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    with _quiet_loggers():
        if method == "dynamic":
            quantize_dynamic(
                str(fp32),
                str(out),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=list(DYNAMIC_OPS),
                nodes_to_exclude=list(exclude),
                nodes_to_quantize=list(only or []),
                # the fused ops (com.microsoft domain) defeat ONNX shape inference: their outputs are fp32
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        else:
            quantize_static(
                str(fp32),
                str(out),
                _Reader(calibration),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=list(STATIC_OPS),
                nodes_to_exclude=list(exclude),
                nodes_to_quantize=list(only or []),
                calibrate_method=CalibrationMethod.MinMax,
                # biases stay fp32 (an int32 bias needs an input scale the head's inputs do not always have)
                extra_options={
                    "WeightSymmetric": True,
                    "ActivationSymmetric": False,
                    "QuantizeBias": False,
                    "DefaultTensorType": onnx.TensorProto.FLOAT,
                },
            )


def _groups(nodes: list[str]) -> list[list[str]]:
    """Contiguous groups of the quantizable nodes (graph order), at most MAX_GROUPS."""
    k = min(MAX_GROUPS, len(nodes))
    return [list(g) for g in np.array_split(np.asarray(nodes, dtype=object), k)] if k else []


def select_int8(
    fp32: Path,
    out: Path,
    calibration: list[dict],
    evaluation: list[dict],
    decide: Callable[[np.ndarray], np.ndarray],
    target: float,
    say: Callable[[str], None] = lambda _: None,
) -> dict:
    """Quantize ``fp32`` into ``out`` (see the module docstring); returns the choice and every candidate tried."""
    reference, fp32_seconds = run_graph(fp32, evaluation)
    ref_labels = decide(reference)
    n = len(ref_labels)
    work = out.with_name("candidate.onnx")
    tried: list[dict] = []

    def attempt(method: str, exclude: list[str]) -> dict:
        try:
            _quantize(method, fp32, work, calibration, exclude, None)
            logits, seconds = run_graph(work, evaluation)
        except Exception as e:  # onnxruntime's own error types: that candidate is out
            row = {"method": method, "excluded": len(exclude), "error": f"{type(e).__name__}: {str(e)[:200]}"}
            tried.append(row)
            return row
        agree = float(np.mean(_same(decide(logits), ref_labels)))
        row = {"method": method, "excluded": len(exclude), "agreement": agree, "texts_per_second": n / seconds, "nodes_excluded": exclude}
        tried.append(row)
        say(f"  int8 {method}, {len(exclude)} node(s) in fp32: agreement {100 * agree:.2f}%, {n / seconds:.0f} texts/s")
        if agree >= target and (best.get("row") is None or row["texts_per_second"] > best["row"]["texts_per_second"]):
            best["row"] = row
            work.replace(out)
        return row

    best: dict = {}
    first = {m: attempt(m, []) for m in ("dynamic", "static")}

    def faster_than_best(row: dict) -> bool:  # nodes kept in fp32 only slow a candidate down
        return best.get("row") is None or row.get("texts_per_second", 0.0) > best["row"]["texts_per_second"]

    # A candidate below the required agreement that runs faster than the best one reaching it gets fp32 groups, most sensitive first.
    short = [m for m, r in first.items() if "agreement" in r and r["agreement"] < target and faster_than_best(r)]
    if short:
        order = _sensitivity(fp32, calibration, evaluation, reference)
        for method in sorted(short, key=lambda m: -first[m]["agreement"]):
            for k in range(1, max(len(order) // 2, 1) + 1):
                row = attempt(method, [name for g in order[:k] for name in g])
                if row.get("agreement", 0.0) >= target or not faster_than_best(row):
                    break
    work.unlink(missing_ok=True)
    if best.get("row") is None:
        reached = max((r.get("agreement", 0.0) for r in tried), default=0.0)
        raise ModelError(
            f"no int8 quantization reached {100 * target:.2f}% label agreement with the fp32 graph on {n} validation texts "
            f"(best {100 * reached:.2f}%); lower --agreement or export without --quantize"
        )
    chosen = best["row"]
    return {
        "method": chosen["method"],
        "agreement": chosen["agreement"],
        "target": target,
        "evaluation_texts": n,
        "calibration_texts": int(sum(len(b[next(iter(b))]) for b in calibration)),
        "nodes_excluded": chosen["nodes_excluded"],
        "speedup_over_fp32_graph": chosen["texts_per_second"] / (n / fp32_seconds),
        "candidates": [{k: v for k, v in r.items() if k != "nodes_excluded"} for r in tried],
    }


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per text: the same decision (labels; regression: within 1% of the reference values' spread)."""
    if a.dtype.kind == "f":
        return np.abs(a - b) <= 0.01 * max(float(np.ptp(b)), 1e-6)
    return (a == b).reshape(len(a), -1).all(axis=1)


def _sensitivity(fp32: Path, calibration: list[dict], evaluation: list[dict], reference: np.ndarray) -> list[list[str]]:
    """The node groups, most sensitive first: mean absolute logit change when that group alone is quantized (dynamic)."""
    groups = _groups(quantizable_nodes(fp32, DYNAMIC_OPS))
    work = fp32.with_name("sensitivity.onnx")
    scores = []
    sample = evaluation[: max(1, len(evaluation) // 2)]
    ref = reference[: sum(len(b[next(iter(b))]) for b in sample)]
    try:
        for g in groups:
            _quantize("dynamic", fp32, work, calibration, [], g)
            scores.append(float(np.abs(run_graph(work, sample)[0] - ref).mean()))
    finally:
        work.unlink(missing_ok=True)
    return [groups[i] for i in np.argsort(scores)[::-1]]
