"""The transformer blocks of a backbone, found by shape rather than by architecture name."""

from __future__ import annotations

from torch import nn

from nlp_transfer.errors import ConfigError, ModelError


def find_layers(backbone: nn.Module) -> tuple[str, nn.ModuleList]:
    """The backbone's stack of transformer blocks: its longest homogeneous ``ModuleList``."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, mod in backbone.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and all(type(m) is type(mod[0]) for m in mod):
            if best is None or len(mod) > len(best[1]):
                best = (name, mod)
    if best is None:
        raise ModelError(f"cannot find the transformer layers of {type(backbone).__name__}")
    return best


def resolve_layer(layer: int, num_layers: int, what: str = "model.feature_layer", name: str = "the checkpoint") -> int:
    """Layer ``layer`` (from 1; negative: from the top, -1 = the last) as a number 1..``num_layers``."""
    n = num_layers + 1 + layer if layer < 0 else layer
    if not 1 <= n <= num_layers:
        raise ConfigError(f"{what}={layer} but {name} has {num_layers} layers; use 1..{num_layers} (or -{num_layers}..-1 from the top)")
    return n


def keep_layers(backbone: nn.Module, layer: int, name: str = "the checkpoint") -> int:
    """Drop every transformer block above ``layer`` (see :func:`resolve_layer`), so the backbone's output is that
    layer's (after the final norm, for architectures that have one); the config follows, so the truncated model
    saves and reloads as itself. Returns the number of layers kept."""
    path, layers = find_layers(backbone)
    n = resolve_layer(layer, len(layers), name=name)
    if n < len(layers):
        parent_name, _, attr = path.rpartition(".")
        parent = backbone.get_submodule(parent_name) if parent_name else backbone
        setattr(parent, attr, nn.ModuleList(list(layers)[:n]))
        cfg = backbone.config
        cfg.num_hidden_layers = n  # GPT-2's n_layer too (attribute_map)
        if isinstance(getattr(cfg, "layer_types", None), list):  # per-layer attention kinds (sliding windows ...)
            cfg.layer_types = cfg.layer_types[:n]
    return n


FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_norm")


def final_norm(backbone: nn.Module) -> nn.Module | None:
    """The normalisation applied after the last block (Llama's ``norm``, GPT-2's ``ln_f``, ...), or None (BERT)."""
    for attr in FINAL_NORMS:
        mod = getattr(backbone, attr, None)
        if isinstance(mod, nn.Module):
            return mod
    return None
