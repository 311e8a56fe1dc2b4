"""Recipes: the schema (one dataclass per section) and how YAML files and overrides become it.

    cfg = RecipeConfig.from_yaml("recipes/rotten_tomatoes/minilm-full.yaml", ["train.lr=3e-5"])

Imports no torch: ``--help`` and recipe errors are instant.
"""

from nlp_transfer.config.parsing import apply_overrides, describe_fields
from nlp_transfer.config.schema import (
    ACTIVATIONS,
    ADAPT_OBJECTIVES,
    ADAPTER_MODES,
    AGGREGATES,
    BACKBONE_DTYPES,
    HEADS,
    LOSSES,
    POOLINGS,
    PRECISIONS,
    SAMPLERS,
    TASK_CHOICES,
    TASKS,
    THRESHOLD_MODES,
    TRANSFER_MODES,
    TRUNCATIONS,
    AdaptConfig,
    AdapterConfig,
    DataConfig,
    DomainAdversarialConfig,
    ModelConfig,
    OutputConfig,
    RecipeConfig,
    SetFitConfig,
    TrainConfig,
    TransferConfig,
    describe_recipe,
)

__all__ = [
    "RecipeConfig",
    "ModelConfig",
    "DataConfig",
    "TransferConfig",
    "AdapterConfig",
    "AdaptConfig",
    "ADAPT_OBJECTIVES",
    "DomainAdversarialConfig",
    "SetFitConfig",
    "TrainConfig",
    "OutputConfig",
    "apply_overrides",
    "describe_fields",
    "describe_recipe",
    "TRANSFER_MODES",
    "ADAPTER_MODES",
    "POOLINGS",
    "HEADS",
    "ACTIVATIONS",
    "PRECISIONS",
    "BACKBONE_DTYPES",
    "TRUNCATIONS",
    "AGGREGATES",
    "SAMPLERS",
    "TASKS",
    "TASK_CHOICES",
    "LOSSES",
    "THRESHOLD_MODES",
]
