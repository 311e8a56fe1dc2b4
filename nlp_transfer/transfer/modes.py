"""Transfer modes: which parameters train, their learning rates, and regularisers.

Parameters are addressed by *depth*: 0 for the embeddings, ``1..L`` for the transformer
layers, ``L`` also for what sits above the last layer inside the backbone (final norms),
and ``L + 1`` for the head. Every mode and layer-wise decay is defined on that depth.
"""

from __future__ import annotations

import re

from torch import nn

from nlp_transfer.config import ADAPTER_MODES, TrainConfig, TransferConfig
from nlp_transfer.errors import ConfigError
from nlp_transfer.models.adapters import is_adapted
from nlp_transfer.models.layers import find_layers
from nlp_transfer.transfer.adapters import add_adapters


def parameter_depths(model: nn.Module) -> dict[str, int]:
    """Depth of every parameter of a ``TextClassifier`` (see module docstring)."""
    layers_name, layers = find_layers(model.backbone)
    n = len(layers)
    pattern = re.compile(rf"^backbone\.{re.escape(layers_name)}\.(\d+)\.")
    depths, seen_layer = {}, False
    for name, _ in model.named_parameters():
        if name.startswith(("head.", "domain_head.")):  # the heads (domain_head: domain-adversarial training)
            depths[name] = n + 1
            continue
        if ".prompt_encoder." in name:  # prompt tuning's virtual tokens enter where the embeddings do
            depths[name] = 0
            continue
        m = pattern.match(name)
        if m:
            depths[name] = int(m.group(1)) + 1
            seen_layer = True
        else:  # before the layers: embeddings; after them: final norms / pooler
            depths[name] = n if seen_layer else 0
    return depths


def num_layers(model: nn.Module) -> int:
    return len(find_layers(model.backbone)[1])


def trainable_depth_floor(cfg: TransferConfig, n_layers: int, epoch: int = 0) -> int | None:
    """Lowest depth that trains in a depth-based mode (None: mode is not depth-based)."""
    if cfg.mode == "full":
        return 0
    if cfg.mode == "feature_extraction":
        return n_layers + 1
    if cfg.mode == "partial":
        return n_layers + 1 - cfg.unfreeze_top if cfg.unfreeze_top > 0 else n_layers + 1
    if cfg.mode == "gradual":
        # ULMFiT: the head alone first; every `unfreeze_every` epochs the next `unfreeze_step`
        # layer groups open, top down, the embeddings last.
        return max(0, n_layers + 1 - cfg.unfreeze_step * (epoch // cfg.unfreeze_every))
    return None


def apply_transfer(model: nn.Module, cfg: TransferConfig, epoch: int = 0) -> dict[str, int]:
    """Set ``requires_grad`` for ``cfg.mode`` (at ``epoch`` for gradual); returns trainable counts."""
    if cfg.mode in ADAPTER_MODES:  # peft freezes the backbone and trains its adapter; the head trains too
        if not is_adapted(model.backbone):
            add_adapters(model, cfg)
        for p in model.head.parameters():
            p.requires_grad = True
        return _counts(model)
    if cfg.mode == "zero_shot":  # nothing trains: the head is the language model's own (transfer/zero_shot.py)
        for p in model.parameters():
            p.requires_grad = False
        return _counts(model)
    if cfg.mode == "setfit":  # the whole encoder trains on pairs; the head is fitted by logistic regression, not SGD
        for name, p in model.named_parameters():
            p.requires_grad = not name.startswith("head.")
        return _counts(model)
    depths = parameter_depths(model)
    n = num_layers(model)
    if cfg.mode == "partial" and cfg.unfreeze_top > n:
        raise ConfigError(f"transfer.unfreeze_top={cfg.unfreeze_top} but the backbone has only {n} layers; use 0..{n}")
    floor = trainable_depth_floor(cfg, n, epoch)
    for name, p in model.named_parameters():
        if cfg.mode == "bitfit":
            p.requires_grad = name.startswith("head.") or name.endswith(".bias")
        else:
            p.requires_grad = depths[name] >= floor
    if cfg.mode == "bitfit" and not any(p.requires_grad for n, p in model.named_parameters() if not n.startswith("head.")):
        raise ConfigError(
            f"transfer.mode=bitfit but {type(model.backbone).__name__} has no bias parameters (Llama-family "
            "decoders have none), so only the head would train; use partial or feature_extraction"
        )
    return _counts(model)


def _counts(model: nn.Module) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": sum(p.numel() for p in model.parameters())}


def param_groups(model: nn.Module, train: TrainConfig, transfer: TransferConfig) -> list[dict]:
    """AdamW groups: per depth (layer-wise decay), with and without weight decay.

    Gradual unfreezing adds every parameter now (frozen ones get no gradient and so no
    update) so that layers opened later already belong to the optimiser.
    """
    depths = parameter_depths(model)
    n = num_layers(model)
    head_lr = train.head_lr or train.lr
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad and transfer.mode != "gradual":
            continue
        d = depths[name]
        lr = head_lr if d == n + 1 else train.lr * transfer.layerwise_lr_decay ** (n - min(d, n))
        no_decay = p.ndim < 2  # biases and norm weights
        key = (d, no_decay)
        if key not in groups:
            groups[key] = {"params": [], "names": [], "lr": lr, "weight_decay": 0.0 if no_decay else train.weight_decay, "depth": d}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]
