"""Backbones with adapters (peft): saving the adapter, rebuilding from base + adapter, merging.

A backbone with adapters is a ``peft.PeftModel`` around the pretrained model, whose weights stay
frozen. A saved adapter run therefore holds only what trained: the adapter
(``adapter_config.json`` and ``adapter_model.safetensors``, peft's own files) and the head. Its
manifest's ``adapter`` entry names the base checkpoint and a fingerprint of the base weights, so a
reload rebuilds exactly the model that was trained, or says in one line which base it needs.

Which modules get adapters, and with which options, is the transfer layer's business
(:mod:`nlp_transfer.transfer.adapters`); this module only knows peft models as objects.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from pathlib import Path

import torch
from torch import nn

from nlp_transfer.errors import ModelError
from nlp_transfer.utils.logs import quiet

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)


def peft_call(fn, *args, **kwargs):
    """Call peft with transformers' informational output silenced, and without the FutureWarning it
    triggers on every model (peft 0.21 reads transformers 5's deprecated ``is_gradient_checkpointing``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return quiet(fn, *args, **kwargs)


def is_adapted(backbone: nn.Module) -> bool:
    """Whether ``backbone`` carries peft adapters (checked without importing peft)."""
    return type(backbone).__module__.startswith("peft.")


def prompt_length(backbone: nn.Module) -> int:
    """Virtual tokens the backbone puts in front of every input (prompt tuning), else 0."""
    if not is_adapted(backbone):
        return 0
    config = backbone.active_peft_config
    return int(config.num_virtual_tokens) if config.is_prompt_learning else 0


def base_of(backbone: nn.Module) -> nn.Module:
    """The pretrained model inside an adapted backbone (the backbone itself otherwise)."""
    return backbone.get_base_model() if is_adapted(backbone) else backbone


def fingerprint(backbone: nn.Module) -> str:
    """A digest of every parameter (names, shapes, dtypes, bytes) of a backbone without adapters.

    Taken when the adapters are added and checked when a run is reloaded: an adapter is only
    meaningful on the weights it was trained on.
    """
    if is_adapted(backbone):
        raise ValueError("fingerprint the base backbone before adapters are added")
    h = hashlib.sha256()
    for name, p in sorted(backbone.named_parameters(), key=lambda kv: kv[0]):
        t = p.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()


def save_adapter(backbone: nn.Module, directory: Path) -> None:
    """peft's adapter files (its config and weights) into ``directory``; no model card, no base weights."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    config = copy.deepcopy(backbone.active_peft_config)
    config.inference_mode = True
    config.save_pretrained(str(directory))
    weights = get_peft_model_state_dict(backbone)
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})


def load_adapter(base: nn.Module, directory: Path, expected_fingerprint: str | None, base_name: str) -> nn.Module:
    """``base`` with the adapter saved in ``directory``; a different base fails in one line."""
    from peft import PeftModel

    if expected_fingerprint is not None:
        got = fingerprint(base)
        if got != expected_fingerprint:
            raise ModelError(
                f"the base checkpoint '{base_name}' is not the one the adapter in '{directory}' was trained on (weights "
                f"{got[:19]}..., the manifest expects {expected_fingerprint[:19]}...); restore that checkpoint, or retrain"
            )
    try:
        return peft_call(PeftModel.from_pretrained, base, str(directory))
    except Exception as e:  # noqa: BLE001 - peft, safetensors and torch each raise their own types here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(
            f"the adapter in '{directory}' could not be loaded ({type(e).__name__}: {first[:200]}); "
            "the run directory is damaged: copy it again or retrain"
        ) from None


def merge(backbone: nn.Module) -> nn.Module:
    """The base model with the adapter folded into its weights (a plain transformers model)."""
    if prompt_length(backbone):
        raise ModelError(
            "a prompt_tuning adapter adds virtual input tokens and has no weights to fold into the model; "
            "keep the adapter run as it is (load_run reads it)"
        )
    return peft_call(backbone.merge_and_unload, safe_merge=True)
