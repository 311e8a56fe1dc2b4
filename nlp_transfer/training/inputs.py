"""What the loop iterates over: loaders for the recipe's mode, with frozen work done once.

* ``feature_extraction``: pooled features from the on-disk cache (encoding what is missing);
  the head trains on them.
* ``partial``, and adapters on the top layers only: hidden states entering the first trained
  layer, computed once; the frozen layers are swapped for a replay of them (:class:`~nlp_transfer.transfer.prefix.FrozenPrefix`).
* otherwise (or with the caches switched off): token batches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from nlp_transfer.data.batching import LengthGroupedBatchSampler, PadCollator
from nlp_transfer.data.sampling import sampling_weights
from nlp_transfer.errors import ConfigError
from nlp_transfer.transfer.caches import FeatureDataset, as_batch, cached_features
from nlp_transfer.transfer.modes import parameter_depths
from nlp_transfer.transfer.prefix import FrozenPrefix, PrefixCollator, PrefixDataset, encode_prefix, first_trained_layer
from nlp_transfer.utils.extras import require_extra

# Modes whose frozen lower layers may be replayed from a cache: partial, and adapters on the top layers only.
PREFIX_MODES = ("partial", "lora", "dora", "ia3")


@dataclass(frozen=True)
class Inputs:
    """Loaders, and what was computed once to get there (built once, never changed)."""

    train: torch.utils.data.DataLoader
    validation: torch.utils.data.DataLoader
    test: torch.utils.data.DataLoader
    sampler: LengthGroupedBatchSampler | None = None
    features: dict[str, FeatureDataset] | None = None  # feature_extraction: {split: FeatureDataset}
    prefix: FrozenPrefix | None = None  # partial: replay of the frozen layers (install before prepare)
    encode_seconds: float = 0.0
    cache: dict = field(default_factory=dict)  # what the caches did, for metrics.json
    tokens: dict | None = None  # setfit: the tokenized splits, which validation encodes to fit the head
    collate: object = None  # setfit: how token rows become a batch


def loader(ds, batch_size, collate, *, shuffle, seed=0, group=True, lengths=None, weights=None, processes=1):
    """A DataLoader over length-grouped batches, and its batch sampler (``set_epoch`` each epoch)."""
    lengths = ds["length"] if lengths is None else lengths  # tokenize() adds "length"
    sampler = LengthGroupedBatchSampler(lengths, batch_size, shuffle, seed, group, weights, short_last=processes > 1)
    # A generator of its own: iterating the loader then never draws from the global RNG, so a
    # resumed run continues the dropout stream exactly where the interrupted one stopped.
    gen = torch.Generator() if shuffle else None
    return torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate, generator=gen), sampler


def build_inputs(cfg, model, tokenizer, tokens, accelerator, log=None, progress: bool = True) -> Inputs:
    """Loaders for ``cfg``'s mode (see the module docstring)."""
    t = cfg.transfer
    # train.sampler=weighted: every class equally likely per draw (over the rows that train: windows, with chunking)
    weights = sampling_weights(tokens["train"]["labels"]) if cfg.train.sampler == "weighted" else None
    if t.mode == "feature_extraction" and (t.cache_features or cfg.model.head == "logreg"):
        return _feature_inputs(cfg, model, tokenizer, tokens, accelerator, weights, log, progress)
    if t.mode == "zero_shot":  # no training: the held-out splits' last-token states, encoded once
        return _feature_inputs(cfg, model, tokenizer, tokens, accelerator, weights, log, progress, splits=("validation", "test"))
    if t.mode == "setfit":
        return _pair_inputs(cfg, tokenizer, tokens, accelerator)
    first = first_trained_layer(model)
    # domain-adversarial training encodes target texts too, which the prefix cache has not seen
    if t.mode in PREFIX_MODES and t.cache_prefix and first >= 1 and not trains_below(model, first) and t.domain_adversarial.target is None:
        return _prefix_inputs(cfg, model, tokenizer, tokens, accelerator, weights, first, progress)
    collate, train_cfg = PadCollator(tokenizer), cfg.train
    train, sampler = loader(
        tokens["train"],
        train_cfg.batch_size,
        collate,
        shuffle=True,
        seed=train_cfg.seed,
        group=train_cfg.group_by_length,
        weights=weights,
        processes=accelerator.num_processes,
    )
    val, _ = loader(tokens["validation"], train_cfg.eval_batch_size, collate, shuffle=False)
    test, _ = loader(tokens["test"], train_cfg.eval_batch_size, collate, shuffle=False)
    return Inputs(train, val, test, sampler)


def trains_below(model, first: int) -> bool:
    """Does anything below layer ``first`` train (embeddings, e.g. with transfer.peft.bias=all)? Then no prefix cache."""
    depths = parameter_depths(model)
    return any(p.requires_grad and depths[name] <= first for name, p in model.named_parameters())


def _feature_inputs(
    cfg, model, tokenizer, tokens, accelerator, weights, log, progress, splits: tuple[str, ...] = ("train", "validation", "test")
) -> Inputs:
    train_cfg, t = cfg.train, cfg.transfer
    model.to(accelerator.device)
    feats, info = cached_features(
        model,
        {s: tokens[s] for s in splits},
        tokenizer,
        PadCollator(tokenizer),
        train_cfg.eval_batch_size,
        accelerator,
        pooling=model.pooling,
        max_length=cfg.model.max_length,
        precision=accelerator.mixed_precision,
        cache_dir=t.cache_dir,
        use_disk=t.cache_features,
        log=log,
        progress=progress,
        layer=model.meta.get("feature_layer"),
    )
    ebs = train_cfg.eval_batch_size
    val = torch.utils.data.DataLoader(feats["validation"], batch_size=ebs, collate_fn=as_batch)
    test = torch.utils.data.DataLoader(feats["test"], batch_size=ebs, collate_fn=as_batch)
    seconds, cache = info.pop("encode_seconds"), {"features": info}
    if "train" not in feats:  # zero-shot: nothing trains
        return Inputs(None, val, test, None, features=feats, encode_seconds=seconds, cache=cache)
    # The same length-grouped batches as the token path, so cached and uncached runs match.
    # FeatureDataset hands out whole batches (__getitems__): no per-example collation.
    train, sampler = loader(
        feats["train"],
        train_cfg.batch_size,
        as_batch,
        shuffle=True,
        seed=train_cfg.seed,
        group=train_cfg.group_by_length,
        lengths=tokens["train"]["length"],
        weights=weights,
        processes=accelerator.num_processes,
    )
    return Inputs(train, val, test, sampler, features=feats, encode_seconds=seconds, cache=cache)


def _prefix_inputs(cfg, model, tokenizer, tokens, accelerator, weights, first: int, progress) -> Inputs:
    train_cfg, collate = cfg.train, PadCollator(tokenizer)
    bs, ebs = train_cfg.batch_size, train_cfg.eval_batch_size
    model.to(accelerator.device)
    t0 = time.perf_counter()
    states = {
        s: encode_prefix(model, tokens[s], collate, ebs, accelerator, first, f"caching {s}", progress) for s in ("train", "validation")
    }
    pcollate = PrefixCollator(collate, getattr(tokenizer, "padding_side", "right"))
    train, sampler = loader(
        PrefixDataset(tokens["train"], states["train"]),
        bs,
        pcollate,
        shuffle=True,
        seed=train_cfg.seed,
        group=train_cfg.group_by_length,
        lengths=tokens["train"]["length"],
        weights=weights,
        processes=accelerator.num_processes,
    )
    val, _ = loader(
        PrefixDataset(tokens["validation"], states["validation"]), ebs, pcollate, shuffle=False, lengths=tokens["validation"]["length"]
    )
    test, _ = loader(tokens["test"], ebs, collate, shuffle=False)  # test runs the whole model, as saved
    seconds = time.perf_counter() - t0
    return Inputs(
        train,
        val,
        test,
        sampler,
        prefix=FrozenPrefix(model, first),
        encode_seconds=seconds,
        cache={"prefix": {"first_trained_layer": first, "seconds": round(seconds, 2)}},
    )


class PairDataset(torch.utils.data.Dataset):
    """SetFit's contrastive pairs over tokenized rows: (row a, row b, 1.0 same class / 0.0 not)."""

    def __init__(self, rows: list[dict], pairs: list[dict]):
        self.rows, self.pairs = rows, pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int) -> dict:
        p = self.pairs[k]
        return {"a": self.rows[p["sentence_1"]], "b": self.rows[p["sentence_2"]], "similarity": p["label"]}


class PairCollator:
    """Both sides of every pair in one padded batch (rows 0..B-1 the first texts, B..2B-1 the second), so
    one forward pass embeds them; ``labels`` holds the B target similarities."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.collate([e["a"] for e in examples] + [e["b"] for e in examples])
        batch.pop("labels", None)
        batch["labels"] = torch.tensor([e["similarity"] for e in examples], dtype=torch.float32)
        return batch


def contrastive_pairs(labels: list[int], num_iterations: int, sampling: str) -> list[dict]:
    """Pairs of example indices with target similarity, drawn by setfit's own sampler (``ContrastiveDataset``):
    each example in ``num_iterations`` positive and as many negative pairs (0: by ``sampling``)."""
    require_extra("fewshot", "transfer.mode=setfit", ConfigError)
    from setfit.sampler import ContrastiveDataset

    from nlp_transfer.utils.logs import quiet

    # max_pairs stops setfit's sampler once it has what num_iterations asks for (it would walk every pair otherwise)
    cap = 2 * num_iterations * len(labels) if num_iterations else -1
    ds = quiet(
        ContrastiveDataset,
        list(range(len(labels))),
        list(labels),
        multilabel=False,
        num_iterations=num_iterations or None,
        sampling_strategy=sampling,
        max_pairs=cap,
    )
    return list(ds)


def _pair_inputs(cfg, tokenizer, tokens, accelerator) -> Inputs:
    train_cfg, collate = cfg.train, PadCollator(tokenizer)
    t0 = time.perf_counter()
    train = tokens["train"]
    pairs = contrastive_pairs(train["labels"], cfg.transfer.setfit.num_iterations, cfg.transfer.setfit.sampling)
    rows = [{k: v for k, v in r.items() if k not in ("labels", "length")} for r in train]
    lengths = [max(len(rows[p["sentence_1"]]["input_ids"]), len(rows[p["sentence_2"]]["input_ids"])) for p in pairs]
    train_loader, sampler = loader(
        PairDataset(rows, pairs),
        train_cfg.batch_size,
        PairCollator(collate),
        shuffle=True,
        seed=train_cfg.seed,
        group=train_cfg.group_by_length,
        lengths=lengths,
        processes=accelerator.num_processes,
    )
    val, _ = loader(tokens["validation"], train_cfg.eval_batch_size, collate, shuffle=False)
    test, _ = loader(tokens["test"], train_cfg.eval_batch_size, collate, shuffle=False)
    positive = sum(p["label"] == 1.0 for p in pairs)
    return Inputs(
        train_loader,
        val,
        test,
        sampler,
        encode_seconds=0.0,
        tokens=tokens,
        collate=collate,
        cache={
            "pairs": {
                "total": len(pairs),
                "positive": positive,
                "negative": len(pairs) - positive,
                "seconds": round(time.perf_counter() - t0, 2),
            }
        },
    )
