"""Parameter-efficient modes through peft: ``lora``, ``dora``, ``ia3`` and ``prompt_tuning``.

The backbone's weights stay frozen; peft adds the adapter (low-rank updates of chosen linear
modules, their DoRA variant, IA³'s learned rescalings, or trained virtual input tokens) and the
head trains beside it. ``transfer.peft`` holds the options (:class:`~nlp_transfer.config.AdapterConfig`).

``target_modules: auto`` picks per architecture: attention query and value for BERT-style
encoders (the LoRA paper's choice, and peft's), every attention and MLP projection for
Llama-style decoders (QLoRA's finding: all linear layers match full fine-tuning best), GPT-2's
fused ``c_attn``; for IA³, keys, values and the feed-forward output (peft's defaults). A
target that matches nothing fails with the backbone's linear module names.

With ``layers_to_transform`` covering only the top layers, everything below the lowest adapted
layer is frozen and unchanged, so its output is computed once (the frozen-prefix cache of
``partial`` mode, :mod:`nlp_transfer.transfer.prefix`).
"""

from __future__ import annotations

import difflib

from torch import nn

from nlp_transfer.config import TransferConfig
from nlp_transfer.errors import ConfigError
from nlp_transfer.models.adapters import fingerprint, peft_call
from nlp_transfer.models.hub import position_limit
from nlp_transfer.models.layers import find_layers

# Llama-style decoders (Llama, Mistral, Qwen2, SmolLM, ...): every projection of attention and MLP.
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def linear_modules(backbone: nn.Module) -> list[str]:
    """Full names of the backbone's linear modules (``nn.Linear`` and GPT-2's ``Conv1D``)."""
    from transformers.pytorch_utils import Conv1D

    return [name for name, m in backbone.named_modules() if isinstance(m, (nn.Linear, Conv1D)) and name]


def short_names(names: list[str]) -> list[str]:
    """Distinct module names without the layer prefix: ``attention.self.query`` for every layer's query."""
    out = []
    for name in names:
        parts = name.split(".")
        digits = [i for i, p in enumerate(parts) if p.isdigit()]
        short = ".".join(parts[digits[-1] + 1 :]) if digits else name
        if short not in out:
            out.append(short)
    return out


def _matches(name: str, key: str) -> bool:  # peft's rule for a target given by name
    return name == key or name.endswith("." + key)


def auto_targets(method: str, backbone: nn.Module, names: list[str]) -> tuple[list[str], list[str] | None]:
    """(target modules, IA³ feed-forward modules) that ``target_modules: auto`` means for ``backbone``."""
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as IA3_FEEDFORWARD,
    )
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as IA3_TARGETS,
    )
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as LORA_TARGETS,
    )

    leaves = {n.rsplit(".", 1)[-1] for n in names}
    model_type = getattr(backbone.config, "model_type", None)
    if method in ("lora", "dora") and {"q_proj", "k_proj", "v_proj", "o_proj"} <= leaves:
        return [m for m in LLAMA_PROJECTIONS if m in leaves], None
    mapping = IA3_TARGETS if method == "ia3" else LORA_TARGETS
    if model_type not in mapping:
        shown = short_names(names)
        raise ConfigError(
            f"transfer.peft.target_modules=auto knows no modules for model type '{model_type}'; name them, e.g. "
            f"transfer.peft.target_modules=[{', '.join(shown[:2])}] (its linear modules: {', '.join(shown)})"
        )
    targets = list(mapping[model_type])
    return targets, (list(IA3_FEEDFORWARD.get(model_type, [])) if method == "ia3" else None)


def resolve_layers(layers: list[int] | None, n: int) -> list[int] | None:
    """``transfer.peft.layers_to_transform`` as indices 0..n-1 (-1 is the top layer), sorted."""
    if layers is None:
        return None
    bad = [i for i in layers if not -n <= i < n]
    if bad:
        raise ConfigError(
            f"transfer.peft.layers_to_transform={layers}: layer {bad[0]} does not exist; the backbone has "
            f"{n} layers (0..{n - 1}, or -1..-{n} from the top)"
        )
    return sorted({i % n for i in layers})


def check_targets(targets: list[str], names: list[str], layers: list[int] | None, layers_name: str) -> None:
    """Every target names at least one linear module (within the chosen layers), or a one-line error."""
    prefix = f"{layers_name}."
    if layers is not None:  # a module outside the layers stack (e.g. the pooler) is never adapted then
        names = [n for n in names if n.startswith(prefix) and int(n[len(prefix) :].split(".")[0]) in layers]
    missing = [t for t in targets if not any(_matches(n, t) for n in names)]
    if missing:
        shown = short_names(names)
        near = difflib.get_close_matches(missing[0], shown + [s.rsplit(".", 1)[-1] for s in shown], n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        where = f" in layers {layers}" if layers is not None else ""
        raise ConfigError(
            f"transfer.peft.target_modules: {', '.join(missing)} matches no linear module{where}{hint}; "
            f"the backbone's linear modules are: {', '.join(shown)}"
        )


def peft_config(cfg: TransferConfig, backbone: nn.Module):
    """The peft config of ``cfg.mode`` for ``backbone`` (targets resolved and checked)."""
    from peft import IA3Config, LoraConfig, PromptTuningConfig

    a = cfg.peft
    if cfg.mode == "prompt_tuning":
        return PromptTuningConfig(
            task_type="FEATURE_EXTRACTION",
            num_virtual_tokens=a.num_virtual_tokens,
            prompt_tuning_init="SAMPLE_VOCAB" if a.prompt_init == "vocab" else "RANDOM",
        )
    names = linear_modules(backbone)
    layers_name, stack = find_layers(backbone)
    layers = resolve_layers(a.layers_to_transform, len(stack))
    if a.target_modules == "auto":
        targets, feedforward = auto_targets(cfg.mode, backbone, names)
    else:
        targets, feedforward = list(a.target_modules), None
    check_targets(targets, names, layers, layers_name)
    from transformers.pytorch_utils import Conv1D

    conv = any(isinstance(m, Conv1D) for n, m in backbone.named_modules() if any(_matches(n, t) for t in targets))
    where = {
        "layers_to_transform": layers,
        "layers_pattern": layers_name.rsplit(".", 1)[-1] if layers else None,
        "fan_in_fan_out": conv,
    }  # GPT-2's Conv1D stores its weight transposed
    if cfg.mode == "ia3":
        if feedforward is None:  # named targets: the feed-forward ones are those peft lists for the architecture
            from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as IA3_FEEDFORWARD

            known = IA3_FEEDFORWARD.get(getattr(backbone.config, "model_type", None), [])
            feedforward = [t for t in targets if t in known]
        if layers is not None:  # IA3Config has no layers_to_transform: name each module of those layers instead
            inside = [n for n in names if n.startswith(f"{layers_name}.") and int(n.split(".")[len(layers_name.split("."))]) in layers]
            feedforward = [n for n in inside if any(_matches(n, t) for t in feedforward)]
            targets = [n for n in inside if any(_matches(n, t) for t in targets)]
        return IA3Config(target_modules=targets, feedforward_modules=feedforward, fan_in_fan_out=conv)
    return LoraConfig(
        r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout, target_modules=targets, bias=a.bias, use_dora=cfg.mode == "dora", **where
    )


def add_adapters(model: nn.Module, cfg: TransferConfig) -> dict:
    """Wrap ``model.backbone`` (a ``TextClassifier``'s) with the adapter of ``cfg.mode``; returns the
    manifest's ``adapter`` entry (also kept in ``model.meta``)."""
    from peft import get_peft_model

    backbone = model.backbone
    if cfg.mode == "prompt_tuning":
        limit = position_limit(backbone.config)
        total = model.meta.get("max_length", 0) + cfg.peft.num_virtual_tokens
        if limit is not None and total > limit:
            raise ConfigError(
                f"model.max_length + transfer.peft.num_virtual_tokens = {total} exceeds the {limit} positions "
                f"the backbone can read; lower one of them"
            )
    config = peft_config(cfg, backbone)
    entry = {
        "method": cfg.mode,
        "base_checkpoint": model.meta.get("source_checkpoint"),
        "gguf_file": model.meta.get("gguf_file"),
        "base_path": _local_path(backbone),  # where it was found, tried when base_checkpoint does not resolve
        "base_fingerprint": fingerprint(backbone),
        "target_modules": sorted(config.target_modules) if getattr(config, "target_modules", None) else None,
        "layers_to_transform": resolve_layers(cfg.peft.layers_to_transform, len(find_layers(backbone)[1])),
    }
    if cfg.mode in ("lora", "dora"):
        entry.update(r=config.r, alpha=config.lora_alpha)
    if cfg.mode == "prompt_tuning":
        entry["num_virtual_tokens"] = config.num_virtual_tokens
    model.backbone = peft_call(get_peft_model, backbone, config)
    model.meta["adapter"] = entry
    return entry


def _local_path(backbone: nn.Module) -> str | None:
    """The directory the backbone was loaded from (absolute), or None for a hub id or a model built in memory."""
    from pathlib import Path

    path = getattr(backbone.config, "_name_or_path", "") or ""
    return str(Path(path).resolve()) if path and Path(path).is_dir() else None


def describe_adapter(entry: dict) -> str:
    """One phrase for logs and reports, e.g. ``lora r=8 on query, value (layers 4, 5)``."""
    if entry["method"] == "prompt_tuning":
        return f"prompt tuning, {entry['num_virtual_tokens']} virtual tokens"
    what = entry["method"] + (f" r={entry['r']}" if "r" in entry else "")
    layers = entry.get("layers_to_transform")
    on = f" on {', '.join(entry['target_modules'] or [])}"
    return what + on + (f" (layers {', '.join(map(str, layers))})" if layers else " (every layer)")
