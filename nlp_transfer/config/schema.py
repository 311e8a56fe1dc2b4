"""The recipe schema: one dataclass per section, a help text per field, validated on construction.

A recipe is a YAML file with the sections ``model``, ``data``, ``transfer``,
``train`` and ``output``. Command-line overrides use dotted names with ``=``::

    accelerate launch -m nlp_transfer train --config recipes/rotten_tomatoes/minilm-full.yaml \\
        train.lr=3e-5 train.epochs=2 data.max_samples=500

Values are parsed as YAML scalars (``3e-5`` is a float, ``true`` a bool, ``null`` None).
Unknown keys and values of the wrong type raise :class:`ConfigError` naming the nearest
valid key or the expected type.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nlp_transfer.config.parsing import apply_overrides, build, describe_fields, merge_sections
from nlp_transfer.errors import ConfigError
from nlp_transfer.metrics import SELECTABLE_METRICS

# Adapter modes go through the peft library (nlp_transfer/transfer/adapters.py).
ADAPTER_MODES = ("lora", "dora", "ia3", "prompt_tuning")
TRANSFER_MODES = ("feature_extraction", "partial", "gradual", "bitfit", "full") + ADAPTER_MODES + ("setfit", "zero_shot")
PAIR_SAMPLING = ("oversampling", "undersampling", "unique")
ADAPTER_BIASES = ("none", "all", "lora_only")
PROMPT_INITS = ("vocab", "random")
POOLINGS = ("auto", "cls", "pooler", "mean", "max", "last")
HEADS = ("linear", "mlp", "logreg")
ACTIVATIONS = ("gelu", "relu", "tanh")
PRECISIONS = ("auto", "no", "fp16", "bf16")
BACKBONE_DTYPES = ("float32", "bfloat16")
TRUNCATIONS = ("head", "tail", "head+tail")
AGGREGATES = ("mean", "max")
SAMPLERS = ("random", "weighted")
# Task types (their logic lives in tasks.py; the names are here so recipes validate without torch).
TASKS = ("single_label", "multi_label", "regression")
TASK_CHOICES = ("auto",) + TASKS
LOSSES = ("auto", "cross_entropy", "bce", "mse", "huber")
THRESHOLD_MODES = ("per_label", "global")


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a help text (shown by ``--help`` and in docs)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


def _choice(section: str, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        near = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise ConfigError(f"{section}.{name}='{value}' is not valid{hint}; choose one of {', '.join(choices)}")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass
class ModelConfig:
    name_or_path: str = _f("minilm", "Checkpoint: a catalog short name (minilm), a local directory, or a hub id.")
    pooling: str = _f("auto", "How token states become one vector: auto (the architecture's own), cls, pooler, mean, max, last.")
    feature_layer: int | None = _f(
        None,
        "Read the features from this transformer layer, counted from 1 (negative: from the top, -1 = the last); the "
        "layers above it are dropped from the model (faster, smaller run). null: the last. nlp-transfer select ranks them.",
    )
    head: str = _f(
        "linear",
        "Classification head: linear, mlp, or logreg (scikit-learn logistic regression fitted on the cached "
        "features; feature_extraction only; saved as an ordinary linear head).",
    )
    head_hidden_size: int | None = _f(None, "Hidden size of the mlp head (default: the backbone's hidden size).")
    head_activation: str = _f("gelu", "Activation of the mlp head: gelu, relu or tanh.")
    logreg_c: float | None = _f(
        None, "Inverse regularisation strength C of the logreg head; null picks the best of 0.01..100 on validation."
    )
    head_dropout: float = _f(0.1, "Dropout before the head's linear layer(s).")
    max_length: int = _f(128, "Longest tokenized input (special tokens included); longer texts are truncated or chunked.")
    truncation: str = _f(
        "head",
        "Which tokens a text longer than max_length keeps: head (the first), tail (the last), or head+tail "
        "(the first head_fraction of the budget and the last tokens for the rest; Sun et al. 2019).",
    )
    head_fraction: float = _f(0.25, "head+tail: share of the token budget taken from the start (0.25: 1/4 head, 3/4 tail).")
    chunking: bool = _f(
        False,
        "Cut long texts into sliding windows of max_length tokens instead of truncating: each window trains with "
        "its document's label; a document's prediction aggregates its windows' logits (chunk_aggregate).",
    )
    chunk_stride: int = _f(64, "chunking: tokens shared by two consecutive windows (the tokenizer's 'stride' sense).")
    chunk_aggregate: str = _f("mean", "chunking: a document's logits from its windows': mean, or max (element-wise).")
    max_chunks: int | None = _f(None, "chunking: keep at most this many windows per document (the first ones); null: all.")
    num_labels: int | None = _f(None, "Expected number of classes; checked against the data when set.")
    prompt: str | None = _f(
        None,
        "A template every text is put in before tokenization, with {text} where the text goes, e.g. "
        "'Review: {text}\\nSentiment:'; a long text is cut inside it, so the words after {text} stay. Saved with the run.",
    )
    label_words: dict[str, str] | None = _f(
        None,
        "transfer.mode=zero_shot: the word the model should say after the prompt for each label, e.g. {fresh: ' good', "
        "rotten: ' bad'}; default: the label names. Words must differ in their first token.",
    )
    calibration_text: str | None = _f(
        "N/A",
        "transfer.mode=zero_shot: a content-free input whose scores are subtracted from every text's (contextual "
        "calibration, Zhao et al. 2021: removes the model's prior for one label word); null: no calibration.",
    )
    pretrained: bool = _f(
        True,
        "Start from the checkpoint's weights; false builds the same architecture from its config with random "
        "weights (seeded by train.seed): the from-scratch baseline that shows what pretraining adds.",
    )
    gguf_file: str | None = _f(
        None,
        "Load the checkpoint from a GGUF file: a path, or a file name inside model.name_or_path (directory or hub "
        "repository). Dequantized once and cached under $NLP_TRANSFER_CACHE (default ~/.cache/nlp_transfer).",
    )
    gradient_checkpointing: bool = _f(
        False, "Recompute layer activations in the backward pass instead of keeping them: less memory, slower steps."
    )
    backbone_dtype: str = _f(
        "float32", "Backbone weights: float32, or bfloat16 (half the memory; frozen backbones only, transfer.mode=feature_extraction)."
    )

    def __post_init__(self) -> None:
        _choice("model", "pooling", self.pooling, POOLINGS)
        _choice("model", "backbone_dtype", self.backbone_dtype, BACKBONE_DTYPES)
        _choice("model", "head", self.head, HEADS)
        _choice("model", "head_activation", self.head_activation, ACTIVATIONS)
        _check(self.logreg_c is None or self.logreg_c > 0, f"model.logreg_c={self.logreg_c} must be positive or null")
        _check(0.0 <= self.head_dropout < 1.0, f"model.head_dropout={self.head_dropout} must be in [0, 1)")
        _check(
            self.feature_layer != 0,
            "model.feature_layer=0 is not a layer; layers count from 1 (negative: from the top, -1 = the last), or null for the last",
        )
        _check(self.max_length >= 8, f"model.max_length={self.max_length} is too small; use at least 8")
        _choice("model", "truncation", self.truncation, TRUNCATIONS)
        _choice("model", "chunk_aggregate", self.chunk_aggregate, AGGREGATES)
        _check(0.0 <= self.head_fraction <= 1.0, f"model.head_fraction={self.head_fraction} must be in [0, 1]")
        _check(
            self.chunk_stride >= 0 and (not self.chunking or self.chunk_stride <= self.max_length // 2),
            f"model.chunk_stride={self.chunk_stride} must be between 0 and half of model.max_length ({self.max_length // 2})",
        )
        _check(self.max_chunks is None or self.max_chunks >= 1, "model.max_chunks must be at least 1 (or null)")
        _check(
            not (self.chunking and self.truncation != "head"),
            f"model.chunking=true keeps every token, so model.truncation='{self.truncation}' has no effect; "
            "set model.truncation=head (or model.chunking=false)",
        )
        _check(
            self.prompt is None or self.prompt.count("{text}") == 1,
            f"model.prompt={self.prompt!r} must contain {{text}} exactly once (where the text goes)",
        )
        _check(self.num_labels is None or self.num_labels >= 2, f"model.num_labels={self.num_labels} must be at least 2")
        _check(self.head_hidden_size is None or self.head_hidden_size > 0, "model.head_hidden_size must be positive")


@dataclass
class DataConfig:
    source: str | None = _f(
        "rotten_tomatoes",
        "Where the data comes from: a catalog name (rotten_tomatoes, bbc_news, tweet_sentiment), a file "
        "(.csv .tsv .json .jsonl .parquet), a directory written by datasets' save_to_disk, or a hub dataset id.",
    )
    train_file: str | None = _f(None, "Explicit training file (instead of source).")
    validation_file: str | None = _f(None, "Explicit validation file (optional; split from train if absent).")
    test_file: str | None = _f(None, "Explicit test file (optional; split from train if absent).")
    text_column: str = _f("text", "Column that holds the text.")
    text_pair_column: str | None = _f(None, "Optional second text column (sentence pairs).")
    label_column: str = _f(
        "label", "Column that holds the label: strings or integers; lists of labels (multi-label); numbers (regression)."
    )
    task: str = _f(
        "auto",
        "single_label, multi_label, regression, or auto: multi_label for list labels, data.label_columns or "
        "data.label_separator; regression for numbers with fractions and more than 20 distinct values; else single_label.",
    )
    label_columns: list[str] | None = _f(None, "Multi-label data as several 0/1 columns, one per label (instead of data.label_column).")
    label_separator: str | None = _f(None, "Multi-label data as strings of labels joined by this separator, e.g. '|' for 'sport|politics'.")
    label_map: dict[str, str | None] | None = _f(
        None,
        "Rename labels before splitting, e.g. {positive: fresh, negative: rotten, neutral: null}: a label mapped to "
        "null drops its rows, labels not named stay as they are (single-label data). Makes another dataset's labels "
        "those of a run, for cross-domain evaluation (nlp-transfer compare --target).",
    )
    validation_fraction: float = _f(0.1, "Fraction of the data held out for validation when the source has no such split.")
    test_fraction: float = _f(0.1, "Fraction held out for test when the source has no such split.")
    split_seed: int = _f(42, "Seed of the stratified splits (recorded with the run).")
    max_samples: int | None = _f(None, "Keep at most this many examples per split (quick runs).")
    samples_per_class: int | None = _f(
        None,
        "Few-shot: train on this many examples of each class, drawn from the training split (stratified, seeded by "
        "data.sample_seed); validation and test stay whole. Single-label data; null: every training example.",
    )
    sample_seed: int = _f(0, "Seed of the data.samples_per_class draw; for one seed, a smaller draw is part of every larger one.")

    def __post_init__(self) -> None:
        _check(
            bool(self.source) or bool(self.train_file),
            "data: set data.source (catalog name, file, saved dataset or hub id) or data.train_file",
        )
        for name in ("validation_fraction", "test_fraction"):
            v = getattr(self, name)
            _check(0.0 < v < 1.0, f"data.{name}={v} must be between 0 and 1 (exclusive)")
        _check(
            self.validation_fraction + self.test_fraction < 0.9,
            "data.validation_fraction + data.test_fraction must leave at least 10% for training",
        )
        _check(self.max_samples is None or self.max_samples > 0, "data.max_samples must be positive or null")
        _check(
            self.samples_per_class is None or self.samples_per_class >= 1,
            f"data.samples_per_class={self.samples_per_class} must be at least 1 (or null for every example)",
        )
        _choice("data", "task", self.task, TASK_CHOICES)
        if self.label_columns is not None:
            _check(len(self.label_columns) >= 1, "data.label_columns must name at least one 0/1 column (or be null)")
            _check(len(set(self.label_columns)) == len(self.label_columns), f"data.label_columns={self.label_columns} names a column twice")
        _check(self.label_separator is None or self.label_separator != "", "data.label_separator must not be empty (or null)")
        multi = self.label_columns is not None or self.label_separator is not None
        _check(
            not (multi and self.label_map),
            "data.label_map renames single labels, but data.label_columns or "
            "data.label_separator describe multi-label data; remove data.label_map",
        )
        _check(
            self.label_map is None or any(v is not None for v in self.label_map.values()),
            "data.label_map maps every label it names to null, which would drop all of them; keep at least one",
        )
        _check(
            not multi or self.task in ("auto", "multi_label"),
            f"data.label_columns and data.label_separator describe multi-label data, but data.task={self.task}; "
            "set data.task to multi_label or auto",
        )


@dataclass
class AdapterConfig:
    """``transfer.peft``: the adapter of the lora, dora, ia3 and prompt_tuning modes."""

    r: int = _f(8, "lora, dora: rank of the update B @ A added to each target module's weight.")
    alpha: float = _f(16.0, "lora, dora: scale of the update (alpha / r); 2 * r is the usual choice.")
    dropout: float = _f(0.1, "lora, dora: dropout on the adapter's input.")
    target_modules: str | list[str] = _f(
        "auto",
        "lora, dora, ia3: the linear modules that get adapters, by name or name suffix (e.g. [query, value]); "
        "auto: attention query and value for BERT-style encoders, every attention and MLP projection for "
        "Llama-style decoders, c_attn for GPT-2 (ia3: keys, values and the MLP output).",
    )
    layers_to_transform: list[int] | None = _f(
        None,
        "lora, dora, ia3: only these transformer layers (0 = the lowest; -1 = the top) get adapters; null: all. "
        "The layers below the lowest adapted one stay frozen, so their output is computed once (transfer.cache_prefix).",
    )
    bias: str = _f("none", "lora, dora: also train biases: none, all, or lora_only (those of the adapted modules).")
    num_virtual_tokens: int = _f(20, "prompt_tuning: trained embeddings put in front of every input.")
    prompt_init: str = _f(
        "vocab", "prompt_tuning: start the virtual tokens from embeddings of random vocabulary tokens (vocab) or random vectors."
    )

    def __post_init__(self) -> None:
        _check(self.r >= 1, f"transfer.peft.r={self.r} must be at least 1")
        _check(self.alpha > 0, f"transfer.peft.alpha={self.alpha} must be positive")
        _check(0.0 <= self.dropout < 1.0, f"transfer.peft.dropout={self.dropout} must be in [0, 1)")
        _choice("transfer.peft", "bias", self.bias, ADAPTER_BIASES)
        _choice("transfer.peft", "prompt_init", self.prompt_init, PROMPT_INITS)
        _check(self.num_virtual_tokens >= 1, f"transfer.peft.num_virtual_tokens={self.num_virtual_tokens} must be at least 1")
        if isinstance(self.target_modules, str):
            _check(
                self.target_modules == "auto",
                f"transfer.peft.target_modules='{self.target_modules}' is not valid; "
                "use auto or a list of module names, e.g. [query, value]",
            )
        else:
            _check(
                len(self.target_modules) >= 1 and all(self.target_modules),
                "transfer.peft.target_modules must name at least one module (or be auto)",
            )
        if self.layers_to_transform is not None:
            _check(len(self.layers_to_transform) >= 1, "transfer.peft.layers_to_transform must name at least one layer (or be null)")
            _check(
                len(set(self.layers_to_transform)) == len(self.layers_to_transform),
                f"transfer.peft.layers_to_transform={self.layers_to_transform} names a layer twice",
            )


@dataclass
class SetFitConfig:
    """``transfer.setfit``: the contrastive pairs of the setfit mode (SetFit, Tunstall et al. 2022)."""

    num_iterations: int = _f(
        20, "Pairs per training example and epoch: each example goes into this many positive and as many negative pairs."
    )
    sampling: str = _f(
        "oversampling", "How pairs are drawn when num_iterations is 0: oversampling, undersampling or unique (setfit's strategies)."
    )

    def __post_init__(self) -> None:
        _check(self.num_iterations >= 0, f"transfer.setfit.num_iterations={self.num_iterations} must be >= 0")
        _choice("transfer.setfit", "sampling", self.sampling, PAIR_SAMPLING)


@dataclass
class DomainAdversarialConfig:
    """``transfer.domain_adversarial``: DANN (Ganin et al. 2016) against unlabelled target-domain text."""

    target: str | None = _f(
        None,
        "Unlabelled target-domain texts: a catalog name, a file, a hub dataset (a labelled one: only its training "
        "texts) or a recipe YAML (the training texts of its data section). Set it to train domain-adversarially: a domain classifier on the pooled features learns to tell "
        "source from target while a gradient reversal layer trains the encoder to make them alike. null: off.",
    )
    text_column: str = _f("text", "Column of the target texts (tables and hub datasets).")
    weight: float = _f(1.0, "Largest gradient-reversal coefficient lambda (reached at the end of training).")
    gamma: float = _f(10.0, "Schedule of lambda: weight * (2 / (1 + exp(-gamma * p)) - 1), p the share of steps done (Ganin et al.).")
    hidden_size: int | None = _f(None, "Hidden units of the domain classifier (default: the backbone's hidden size).")
    max_samples: int | None = _f(None, "Use at most this many target texts (a seeded random choice).")

    def __post_init__(self) -> None:
        _check(self.weight > 0, f"transfer.domain_adversarial.weight={self.weight} must be positive")
        _check(self.gamma > 0, f"transfer.domain_adversarial.gamma={self.gamma} must be positive")
        _check(self.hidden_size is None or self.hidden_size >= 1, "transfer.domain_adversarial.hidden_size must be at least 1")
        _check(self.max_samples is None or self.max_samples >= 2, "transfer.domain_adversarial.max_samples must be at least 2")


@dataclass
class TransferConfig:
    mode: str = _f(
        "full",
        "What trains: feature_extraction (head only, cached features), partial, gradual, bitfit, full; or adapters "
        "through peft (the backbone frozen, transfer.peft): lora, dora, ia3, prompt_tuning; or setfit (few labels: the "
        "encoder tuned on contrastive pairs, then a logistic-regression head on its embeddings; transfer.setfit); or "
        "zero_shot (no training: a decoder's next-token probabilities of model.label_words after model.prompt).",
    )
    unfreeze_top: int = _f(2, "partial: number of top transformer layers that train.")
    unfreeze_every: int = _f(1, "gradual: epochs between two unfreezing steps (the head trains alone for the first).")
    unfreeze_step: int = _f(1, "gradual: layer groups opened at each step (top down; the embeddings open last).")
    layerwise_lr_decay: float = _f(1.0, "Learning rate of layer l is lr * decay**(L - l); 1.0 disables.")
    l2sp: float = _f(0.0, "Strength of the L2-SP penalty towards the pretrained weights; 0 disables.")
    cache_features: bool = _f(
        True, "feature_extraction: encode once and keep the pooled features in the on-disk cache (false: run the backbone every step)."
    )
    cache_prefix: bool = _f(
        True,
        "partial, and adapters on the top layers only: compute the hidden states entering the first trained layer "
        "once and run only the layers above.",
    )
    cache_dir: str | None = _f(None, "Feature cache directory (default: $NLP_TRANSFER_CACHE, else ~/.cache/nlp_transfer).")
    peft: AdapterConfig = field(default_factory=AdapterConfig)
    setfit: SetFitConfig = field(default_factory=SetFitConfig)
    domain_adversarial: DomainAdversarialConfig = field(default_factory=DomainAdversarialConfig)

    def __post_init__(self) -> None:
        _choice("transfer", "mode", self.mode, TRANSFER_MODES)
        if self.domain_adversarial.target is not None:
            _check(
                self.mode not in ("feature_extraction", "setfit", "zero_shot"),
                f"transfer.domain_adversarial trains the encoder to make source and target features alike, but "
                f"transfer.mode={self.mode} does not train the encoder that way; use full, partial, gradual, bitfit "
                "or an adapter mode",
            )
        _check(self.unfreeze_top >= 0, "transfer.unfreeze_top must be >= 0")
        _check(self.unfreeze_every >= 1, "transfer.unfreeze_every must be at least 1")
        _check(self.unfreeze_step >= 1, "transfer.unfreeze_step must be at least 1")
        _check(0.0 < self.layerwise_lr_decay <= 1.0, "transfer.layerwise_lr_decay must be in (0, 1]")
        _check(self.l2sp >= 0.0, "transfer.l2sp must be >= 0")
        if self.mode in ADAPTER_MODES:
            _check(
                self.l2sp == 0.0,
                f"transfer.l2sp={self.l2sp} has nothing to hold back with transfer.mode={self.mode}: the "
                "pretrained weights stay frozen and only the adapter trains; set transfer.l2sp=0 (or use full or partial)",
            )
        if self.mode == "prompt_tuning":
            _check(
                self.peft.layers_to_transform is None,
                "transfer.peft.layers_to_transform does not apply to prompt_tuning "
                "(the virtual tokens enter below every layer); set it to null, or use lora on the top layers",
            )
            _check(
                self.layerwise_lr_decay == 1.0,
                "transfer.layerwise_lr_decay does not apply to prompt_tuning (only the input prompt and the head train); set it to 1.0",
            )
        if self.mode != "setfit" and self.setfit != SetFitConfig():
            raise ConfigError(
                f"transfer.setfit configures transfer.mode=setfit and has no effect with transfer.mode={self.mode}; "
                "remove the transfer.setfit settings or set transfer.mode=setfit"
            )
        if self.mode not in ADAPTER_MODES and self.peft != AdapterConfig():
            raise ConfigError(
                f"transfer.peft configures the adapter modes ({', '.join(ADAPTER_MODES)}) and has no effect "
                f"with transfer.mode={self.mode}; remove the transfer.peft settings or choose an adapter mode"
            )


@dataclass
class TrainConfig:
    epochs: int = _f(3, "Passes over the training data.")
    batch_size: int = _f(32, "Examples per optimiser step per process (before gradient accumulation).")
    eval_batch_size: int = _f(128, "Examples per evaluation batch per process.")
    lr: float = _f(5e-5, "Peak learning rate of the backbone.")
    head_lr: float | None = _f(None, "Learning rate of the head (default: train.lr).")
    weight_decay: float = _f(0.01, "AdamW weight decay (not applied to biases and LayerNorm weights).")
    warmup_ratio: float = _f(0.1, "Fraction of the steps spent warming the learning rate up linearly.")
    grad_accum_steps: int = _f(1, "Gradient accumulation steps (effective batch = batch_size * steps * processes).")
    max_grad_norm: float | None = _f(1.0, "Clip the gradient norm to this value; null disables.")
    mixed_precision: str = _f("auto", "no, fp16, bf16, or auto (bf16 where the hardware supports it, else no).")
    seed: int = _f(42, "Seed for model initialisation, shuffling and dropout.")
    metric_for_best: str = _f(
        "auto",
        "Validation metric that picks the best epoch (loss, mse, mae, rmse, hamming_loss: lower is better; others higher). "
        "auto: f1_macro (single-label), f1_micro (multi-label), mse (regression).",
    )
    loss: str = _f("auto", "Training loss: auto (the task's own), cross_entropy, bce (multi-label), mse or huber (regression).")
    huber_delta: float = _f(1.0, "Huber loss: where it turns from quadratic to linear (train.loss=huber).")
    thresholds: float | list[float] | str = _f(
        "per_label",
        "Multi-label decision thresholds: per_label or global (tuned on validation for the best F1, saved with the "
        "model), or fixed: a number in [0, 1] or a list with one per label.",
    )
    early_stopping_patience: int | None = _f(
        None, "Stop after this many epochs without improvement of metric_for_best; null trains every epoch."
    )
    early_stopping_threshold: float = _f(0.0, "Smallest change of metric_for_best that counts as an improvement.")
    group_by_length: bool = _f(True, "Batch texts of similar length together (less padding, faster).")
    fast_kernels: bool = _f(
        True,
        "CPU training: cheaper dropout masks and an attention path without SDPA's slow dropout fallback "
        "(same computation; see nlp_transfer/models/fast.py). false: PyTorch's and transformers' own.",
    )
    class_weights: str | list[float] | None = _f(
        None,
        "Weights of the classes in the training loss: null (all 1), balanced (n / (k * count of the class), "
        "counted on the training examples), or a list with one weight per label in the run's label order.",
    )
    sampler: str = _f(
        "random",
        "Training order: random (each example once per epoch), or weighted (examples drawn with replacement, "
        "each class equally likely; batches are still grouped by length within the drawn examples).",
    )
    num_threads: int | None = _f(None, "CPU threads per process (default: $NLP_TRANSFER_NUM_THREADS, else cores / local processes).")
    log_every: int = _f(50, "Log the training loss every N optimiser steps.")
    report_to: str = _f("none", "Accelerate tracker: none, all, tensorboard, wandb, mlflow, ...")
    save_checkpoints: bool = _f(
        False, "Save a resumable checkpoint at every epoch end (model, optimiser, scheduler, scaler, RNG, loop state)."
    )
    save_every_steps: int | None = _f(
        None, "Also checkpoint every N optimiser steps (mid-epoch too; implies save_checkpoints); null: epoch ends only."
    )
    keep_checkpoints: int = _f(2, "Keep the newest K checkpoints; older ones are deleted.")
    resume: str | None = _f(
        None,
        "Resume an interrupted run: 'latest' (newest checkpoint in output.checkpoint_dir) or a checkpoint "
        "directory (nlp-transfer train --resume [PATH]).",
    )

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "grad_accum_steps", "log_every", "keep_checkpoints"):
            _check(getattr(self, name) >= 1, f"train.{name}={getattr(self, name)} must be at least 1")
        _check(self.lr > 0, f"train.lr={self.lr} must be positive")
        _check(self.head_lr is None or self.head_lr > 0, "train.head_lr must be positive")
        _check(0.0 <= self.warmup_ratio < 1.0, "train.warmup_ratio must be in [0, 1)")
        _check(self.weight_decay >= 0, "train.weight_decay must be >= 0")
        _check(
            self.early_stopping_patience is None or self.early_stopping_patience >= 1,
            "train.early_stopping_patience must be at least 1 (or null to disable)",
        )
        _check(self.early_stopping_threshold >= 0, "train.early_stopping_threshold must be >= 0")
        _check(
            self.save_every_steps is None or self.save_every_steps >= 1,
            "train.save_every_steps must be at least 1 (or null to checkpoint at epoch ends only)",
        )
        _choice("train", "mixed_precision", self.mixed_precision, PRECISIONS)
        _choice("train", "sampler", self.sampler, SAMPLERS)
        if isinstance(self.class_weights, str):
            _check(
                self.class_weights == "balanced",
                f"train.class_weights='{self.class_weights}' is not valid; use null, "
                "balanced, or a list with one weight per label (e.g. [1.0, 3.0])",
            )
        elif self.class_weights is not None:
            _check(
                len(self.class_weights) >= 2 and all(w >= 0 for w in self.class_weights) and any(self.class_weights),
                f"train.class_weights={self.class_weights} must hold one non-negative weight per label (at least 2), not all zero",
            )
        _choice("train", "metric_for_best", self.metric_for_best, SELECTABLE_METRICS)
        _choice("train", "loss", self.loss, LOSSES)
        _check(self.huber_delta > 0, f"train.huber_delta={self.huber_delta} must be positive")
        if isinstance(self.thresholds, str):
            _choice("train", "thresholds", self.thresholds, THRESHOLD_MODES + ("<number in [0, 1]>",))
        else:
            values = self.thresholds if isinstance(self.thresholds, list) else [self.thresholds]
            _check(len(values) >= 1, "train.thresholds must not be an empty list")
            bad = [v for v in values if not 0.0 <= v <= 1.0]
            _check(not bad, f"train.thresholds={self.thresholds} must be in [0, 1] (sigmoid probabilities); got {bad[0] if bad else ''}")


@dataclass
class OutputConfig:
    dir: str = _f("runs/default", "Run directory (written atomically when training ends).")
    overwrite: bool = _f(False, "Replace an existing run directory.")
    checkpoint_dir: str | None = _f(
        None,
        "Where resumable checkpoints go (default: <output.dir>.checkpoints beside the run directory); "
        "deleted once the run directory is written.",
    )


ADAPT_OBJECTIVES = ("auto", "mlm", "clm")


@dataclass
class AdaptConfig:
    """Continued pretraining on unlabelled text (nlp-transfer adapt): the checkpoint learns the domain before the task."""

    source: str | None = _f(
        None,
        "Unlabelled text to adapt on: a catalog name, a file (CSV, JSONL, plain lines, ...), a hub dataset, or a recipe "
        "YAML (the training texts of its data section). A labelled source is split as a recipe on it would be and only "
        "its training texts are read. null: the recipe's own "
        "training texts (task-adaptive pretraining).",
    )
    text_column: str = _f("text", "Column that holds the text (tables and hub datasets).")
    objective: str = _f("auto", "mlm (masked language modelling: encoders), clm (next-token: decoders), or auto (by the checkpoint).")
    whole_word_mask: bool = _f(False, "mlm: mask every token of a chosen word together (always with [MASK]).")
    mask_probability: float = _f(0.15, "mlm: share of tokens chosen for prediction (80% [MASK], 10% random, 10% kept).")
    epochs: int = _f(1, "Passes over the texts (0: none; tune searches the number of epochs from 0).")
    max_steps: int | None = _f(None, "Stop after this many optimiser steps (instead of whole epochs); the schedule ends there.")
    max_samples: int | None = _f(None, "Use at most this many texts (a seeded random choice).")
    lr: float = _f(5.0e-5, "Peak learning rate (linear warm-up over train.warmup_ratio, then linear decay).")
    validation_fraction: float = _f(0.05, "Share of an unlabelled source held out to report the validation loss and perplexity.")

    def __post_init__(self) -> None:
        _choice("adapt", "objective", self.objective, ADAPT_OBJECTIVES)
        _check(0.0 < self.mask_probability < 1.0, f"adapt.mask_probability={self.mask_probability} must be in (0, 1)")
        _check(self.epochs >= 0, f"adapt.epochs={self.epochs} must be 0 (no continued pretraining) or more")
        _check(self.max_steps is None or self.max_steps >= 1, f"adapt.max_steps={self.max_steps} must be at least 1 (or null)")
        _check(self.max_samples is None or self.max_samples >= 2, f"adapt.max_samples={self.max_samples} must be at least 2")
        _check(self.lr > 0, f"adapt.lr={self.lr} must be positive")
        _check(0.0 < self.validation_fraction < 0.5, f"adapt.validation_fraction={self.validation_fraction} must be in (0, 0.5)")


@dataclass
class AugmentConfig:
    """``distill.augment``: more texts for the teacher to label, made from the training texts (Tang et al. 2019).

    Each copy of a training text goes word by word (words: runs of non-space characters): a word becomes the
    student tokenizer's mask token with probability ``p_mask``, else another word of the training texts
    (drawn uniformly from their distinct words) with probability ``p_replace``; then, with probability
    ``p_ngram``, only a random run of 1 to ``max_ngram`` consecutive words of the copy is kept.
    """

    copies: int = _f(0, "Augmented texts made from each training text (Tang et al. used 20); 0: off.")
    p_mask: float = _f(0.1, "Probability that a word becomes the mask token ([MASK] for BERT-style tokenizers).")
    p_replace: float = _f(0.1, "Probability that a word becomes another word drawn from the training texts' vocabulary.")
    p_ngram: float = _f(0.25, "Probability that a copy is cut to a random n-gram of its words (n from 1 to max_ngram).")
    max_ngram: int = _f(5, "Longest n-gram the n-gram sampling keeps.")

    def __post_init__(self) -> None:
        _check(self.copies >= 0, f"distill.augment.copies={self.copies} must be >= 0 (0: no augmentation)")
        for name in ("p_mask", "p_replace", "p_ngram"):
            v = getattr(self, name)
            _check(0.0 <= v <= 1.0, f"distill.augment.{name}={v} must be in [0, 1]")
        _check(self.p_mask + self.p_replace <= 1.0, "distill.augment.p_mask + distill.augment.p_replace must be at most 1")
        _check(self.max_ngram >= 1, f"distill.augment.max_ngram={self.max_ngram} must be at least 1")


@dataclass
class DistillConfig:
    """``distill``: knowledge distillation, the student (this recipe's model) trained on the outputs of teacher runs."""

    teachers: list[str] = _f(
        [],
        "Run directories of the teachers (any run load_run loads: encoder, decoder, adapter, merged or ONNX export); "
        "several: their probabilities (regression: values) are averaged. Empty: no distillation.",
    )
    temperature: float = _f(
        2.0, "Single-label: softmax temperature T of teacher and student in the soft loss, KL(teacher_T || student_T) * T^2."
    )
    alpha: float = _f(0.5, "Weight of the soft (teacher) loss on labelled rows: alpha * soft + (1 - alpha) * the recipe's own loss.")
    unlabelled: str | None = _f(
        None,
        "Unlabelled texts the teacher labels too (soft loss only): a catalog name, a file, a hub dataset or a recipe YAML "
        "(its training texts), as adapt.source takes them. Texts of the student's validation and test splits are left out.",
    )
    text_column: str = _f("text", "Column of the unlabelled texts (tables and hub datasets).")
    unlabelled_max_samples: int | None = _f(None, "Use at most this many unlabelled texts (a seeded random choice).")
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache_dir: str | None = _f(
        None,
        "Where the teachers' outputs are kept (default: transfer.cache_dir, else $NLP_TRANSFER_CACHE or ~/.cache/nlp_transfer).",
    )

    def __post_init__(self) -> None:
        _check(all(isinstance(t, str) and t for t in self.teachers), "distill.teachers must list run directories")
        _check(len(set(self.teachers)) == len(self.teachers), f"distill.teachers={self.teachers} names a run twice")
        _check(self.temperature > 0, f"distill.temperature={self.temperature} must be positive")
        _check(0.0 <= self.alpha <= 1.0, f"distill.alpha={self.alpha} must be in [0, 1]")
        _check(
            self.unlabelled_max_samples is None or self.unlabelled_max_samples >= 1,
            f"distill.unlabelled_max_samples={self.unlabelled_max_samples} must be at least 1 (or null)",
        )
        if not self.teachers and (self.unlabelled is not None or self.augment.copies):
            raise ConfigError("distill.unlabelled and distill.augment need teachers to label the texts; set distill.teachers")

    @property
    def enabled(self) -> bool:
        return bool(self.teachers)

    @property
    def adds_rows(self) -> bool:
        """Does the transfer set hold rows without labels (augmented or unlabelled texts)?"""
        return self.unlabelled is not None or self.augment.copies > 0


@dataclass
class RecipeConfig:
    """A whole recipe: one dataclass per YAML section, every field typed and validated on construction.

    Sections: ``model`` (:class:`ModelConfig`), ``data`` (:class:`DataConfig`), ``transfer``
    (:class:`TransferConfig`, with ``peft``: :class:`AdapterConfig`, ``setfit``: :class:`SetFitConfig`,
    ``domain_adversarial``: :class:`DomainAdversarialConfig`), ``train`` (:class:`TrainConfig`), ``output``
    (:class:`OutputConfig`), ``adapt`` (:class:`AdaptConfig`, for ``nlp-transfer adapt``) and ``distill``
    (:class:`DistillConfig`, with ``augment``: :class:`AugmentConfig`). A value the
    schema refuses, or a combination that cannot work, raises a one-line
    :class:`~nlp_transfer.errors.ConfigError`.

    Examples:
        >>> cfg = RecipeConfig.from_yaml("recipes/rotten_tomatoes/minilm-full.yaml", ["train.epochs=1"])
        >>> cfg.replace(transfer={"mode": "lora"}).transfer.mode
        'lora'
        >>> RecipeConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    name: str = _f("recipe", "A short name for the run (used in logs and reports).")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        if self.model.num_labels is not None and self.model.num_labels < 2:
            raise ConfigError("model.num_labels must be at least 2")
        if self.model.head == "logreg" and self.data.task in ("multi_label", "regression"):  # an explicit data.task: fail before loading
            raise ConfigError(
                f"model.head=logreg fits a single-label logistic regression and cannot learn a {self.data.task} task; "
                "use model.head=linear (or mlp) with transfer.mode=feature_extraction"
            )
        if self.model.head == "logreg" and self.transfer.mode not in ("feature_extraction", "setfit"):
            raise ConfigError(
                f"model.head=logreg is fitted on frozen features and needs transfer.mode=feature_extraction "
                f"(or setfit; got '{self.transfer.mode}'); use head linear or mlp to train the backbone"
            )
        if self.transfer.mode == "setfit":
            self._check_setfit()
        if self.distill.enabled:
            self._check_distill()
        if self.transfer.mode == "zero_shot":
            self._check_zero_shot()
        elif self.model.label_words is not None or self.model.calibration_text != "N/A":
            key = "label_words" if self.model.label_words is not None else "calibration_text"
            raise ConfigError(
                f"model.{key} is for transfer.mode=zero_shot and has no effect with transfer.mode={self.transfer.mode}; remove it"
            )
        if self.model.head == "logreg" and self.transfer.mode != "setfit" and self.train.resume:
            raise ConfigError("model.head=logreg is one scikit-learn fit with no checkpoints; run without train.resume / --resume")
        if self.model.head == "logreg" and self.transfer.mode != "setfit" and self.train.sampler != "random":
            raise ConfigError(
                "train.sampler=weighted does not apply to model.head=logreg (one fit on all features); "
                "use train.class_weights=balanced to reweigh the classes"
            )
        if self.transfer.mode in ADAPTER_MODES and not self.model.pretrained:
            raise ConfigError(
                f"transfer.mode={self.transfer.mode} adapts pretrained weights it keeps frozen, but "
                "model.pretrained=false starts from random ones; set model.pretrained=true or use transfer.mode=full"
            )
        if self.model.backbone_dtype == "bfloat16" and self.transfer.mode != "feature_extraction":
            raise ConfigError(
                f"model.backbone_dtype=bfloat16 needs a frozen backbone, but transfer.mode={self.transfer.mode} trains it "
                "(bf16 weights lose small updates); use model.backbone_dtype=float32 with train.mixed_precision=bf16"
            )

    def _check_setfit(self) -> None:
        """transfer.mode=setfit: a logistic-regression head on the tuned embeddings, one fit per epoch."""
        _check(
            self.model.head == "logreg",
            f"transfer.mode=setfit fits a logistic-regression head on the tuned embeddings; "
            f"set model.head=logreg (got '{self.model.head}')",
        )
        _check(
            not (self.train.resume or self.train.save_checkpoints or self.train.save_every_steps),
            "transfer.mode=setfit runs are short few-shot runs without checkpoints; remove train.resume, "
            "train.save_checkpoints and train.save_every_steps",
        )
        _check(
            self.train.sampler == "random",
            "train.sampler=weighted does not apply to transfer.mode=setfit (its pairs are "
            "balanced: as many positive as negative); use train.sampler=random",
        )
        _check(not self.model.chunking, "transfer.mode=setfit compares whole texts; set model.chunking=false")
        _check(
            self.transfer.layerwise_lr_decay == 1.0 and self.transfer.l2sp == 0.0,
            "transfer.mode=setfit tunes the whole encoder with one learning rate; set transfer.layerwise_lr_decay=1.0 and transfer.l2sp=0",
        )

    def _check_distill(self) -> None:
        """distill.teachers set: the student trains by SGD on token batches that carry the teachers' outputs."""
        mode = self.transfer.mode
        _check(
            mode not in ("setfit", "zero_shot") and self.model.head != "logreg",
            f"distill trains the student on the teachers' outputs by gradient steps, which transfer.mode={mode} with "
            f"model.head={self.model.head} does not take; use full, partial, gradual, bitfit, an adapter mode, or a linear/mlp head",
        )
        _check(
            mode != "feature_extraction" or not self.transfer.cache_features,
            "distill with transfer.mode=feature_extraction needs transfer.cache_features=false (the cached features carry "
            "no teacher outputs)",
        )
        _check(
            self.transfer.domain_adversarial.target is None,
            "distill and transfer.domain_adversarial both add unlabelled texts to training; use one of them",
        )
        _check(
            not self.distill.adds_rows or self.data.text_pair_column is None,
            "distill.unlabelled and distill.augment make single texts, but data.text_pair_column is set; remove them",
        )
        _check(
            not self.distill.adds_rows or self.train.sampler == "random",
            "train.sampler=weighted draws rows by class, and augmented or unlabelled rows have none; use train.sampler=random",
        )

    def _check_zero_shot(self) -> None:
        _check(
            self.model.prompt is not None,
            "transfer.mode=zero_shot asks the model to continue a prompt; set model.prompt, e.g. 'Review: {text}\\nSentiment:'",
        )
        _check(
            self.model.head == "linear",
            f"transfer.mode=zero_shot builds its head from the language model's output "
            f"embeddings of the label words; set model.head=linear (got '{self.model.head}')",
        )
        _check(
            self.model.pooling in ("auto", "last"),
            "transfer.mode=zero_shot reads the next-token prediction at the "
            f"last token; set model.pooling=auto (or last), not {self.model.pooling}",
        )
        _check(
            self.data.text_pair_column is None and not self.model.chunking,
            "transfer.mode=zero_shot scores one text per prompt; unset data.text_pair_column and model.chunking",
        )
        _check(
            self.model.feature_layer is None,
            "transfer.mode=zero_shot reads the language model's prediction after its last layer; remove model.feature_layer",
        )

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict) -> RecipeConfig:
        """A recipe from nested mappings, as a YAML file holds them.

        Args:
            raw: Section name to a mapping of keys (missing sections and keys take their defaults).

        Returns:
            The validated :class:`RecipeConfig`.

        Raises:
            ConfigError: An unknown key (naming the nearest valid one) or an invalid value.

        Examples:
            >>> RecipeConfig.from_dict({"model": {"name_or_path": "minilm"}, "train": {"epochs": 2}}).train.epochs
            2
        """
        return build(cls, raw or {})

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> RecipeConfig:
        """A recipe from a YAML file or a shipped recipe by name, with command-line style overrides applied.

        Args:
            path: The recipe file (e.g. ``recipes/rotten_tomatoes/minilm-full.yaml``) or a shipped recipe's name
                (``rotten_tomatoes/minilm-full``; an existing file wins), resolved by :func:`resolve_recipe`.
            overrides: ``section.key=value`` strings, values read as YAML (``["train.lr=3e-5"]``).

        Returns:
            The validated :class:`RecipeConfig`.

        Raises:
            ConfigError: A missing or malformed file, an unknown key or an invalid value (one line).

        Examples:
            >>> cfg = RecipeConfig.from_yaml("recipes/rotten_tomatoes/minilm-full.yaml", ["train.lr=3e-5"])
            >>> cfg.train.lr
            3e-05
        """
        from nlp_transfer.config.shipped import resolve_recipe

        path = resolve_recipe(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"recipe file '{path}' is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"recipe file '{path}' must hold a mapping of sections (model, data, ...)")
        return cls.from_dict(apply_overrides(raw, overrides or []))

    def to_dict(self) -> dict:
        """The recipe as nested plain dicts (:meth:`from_dict` reads it back to an equal recipe).

        Returns:
            Section name to a mapping of every key, defaults included.

        Examples:
            >>> RecipeConfig().to_dict()["train"]["epochs"]
            3
        """
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The recipe as YAML, every key written (what a run directory's ``recipe.yaml`` holds).

        Returns:
            YAML text that :meth:`from_yaml` reads back to an equal recipe.

        Examples:
            >>> print(RecipeConfig().to_yaml().splitlines()[0])
            name: recipe
        """
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, *overrides: str, **sections: Any) -> RecipeConfig:
        """A validated copy with changes: ``section.key=value`` strings (as on the command line) and/or keyword
        sections holding Python values.

        Both forms go through the same validation as a YAML recipe: an unknown key raises
        :class:`~nlp_transfer.errors.ConfigError` naming the nearest valid one, a wrong value the field's
        type or choices. The strings are applied first, then the keyword sections. A keyword section is
        merged key by key (nested sections too: ``transfer={"peft": {"r": 4}}`` keeps the other
        ``transfer.peft`` keys); ``name="..."`` sets the name. ``self`` is not changed.

        Args:
            *overrides: Dotted overrides such as ``"train.lr=3e-5"``; the value is read as YAML.
            **sections: Section name to a mapping of changes, e.g. ``train={"lr": 3e-5, "epochs": 2}``.

        Returns:
            A new :class:`RecipeConfig`.

        Raises:
            ConfigError: An unknown section or key, or a value the schema refuses.

        Examples:
            >>> cfg = RecipeConfig()
            >>> cfg.replace(train={"lr": 3e-5}, transfer={"mode": "lora", "peft": {"r": 4}}).transfer.peft.r
            4
            >>> cfg.replace("train.lr=3e-5") == cfg.replace(train={"lr": 3e-5})
            True
        """
        raw = apply_overrides(self.to_dict(), list(overrides))
        return RecipeConfig.from_dict(merge_sections(RecipeConfig, raw, sections))


def describe_recipe() -> str:
    """Every recipe key with its default and help text (for ``--help``)."""
    return describe_fields(RecipeConfig)
