"""The transformer blocks of a backbone, found by shape rather than by architecture name."""

from __future__ import annotations

from torch import nn

from nlp_transfer.errors import ModelError


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
