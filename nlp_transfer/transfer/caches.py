"""Frozen work done once: the pooled-feature cache of ``feature_extraction``.

The backbone never changes, so every example is encoded once (no grad, length-sorted
batches, mixed precision) and the head trains on the stored vectors. The vectors are kept on
disk under a key made of everything that determines them: the backbone's weights, pooling,
precision, tokenizer settings and the token ids of the split. A second run with the same key
skips encoding; a change in any part re-encodes. (The frozen prefix of ``partial``:
:mod:`nlp_transfer.transfer.prefix`.)
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nlp_transfer.utils.paths import cache_root
from nlp_transfer.utils.progress import progress as progress_bar

CACHE_FORMAT = 1


# ---- datasets held in memory ------------------------------------------------------------
class FeatureDataset(torch.utils.data.Dataset):
    """Pooled features and labels (and, with chunking, the document id of each window)."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, doc_ids: torch.Tensor | None = None):
        assert len(features) == len(labels) and (doc_ids is None or len(doc_ids) == len(labels))
        self.features, self.labels, self.doc_ids = features, labels, doc_ids

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"features": self.features[i], "labels": self.labels[i]}
        if self.doc_ids is not None:
            item["doc_id"] = self.doc_ids[i]
        return item

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch by one index per tensor (DataLoader calls this); pair with :func:`as_batch`."""
        return self[torch.as_tensor(indices, dtype=torch.long)]


def as_batch(batch: dict) -> dict:
    """``collate_fn`` for datasets that return whole batches (:meth:`FeatureDataset.__getitems__`)."""
    return batch


# ---- sharded encoding -------------------------------------------------------------------
def _sharded_batches(lengths, batch_size: int, rank: int, world: int) -> list[list[int]]:
    """Longest-first batches (little padding), dealt round-robin to the processes."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    return batches[rank::world]


@torch.inference_mode()
def encode_rows(fn, ds, collate, batch_size: int, accelerator, desc: str, progress: bool = True) -> list[torch.Tensor]:
    """``fn(batch)`` -> one CPU tensor per example, for every example of ``ds`` in dataset order.

    Each process encodes its share of length-sorted batches; the results are gathered so
    every process ends with all of them.
    """
    from accelerate.utils import gather_object, send_to_device

    shards = _sharded_batches(ds["length"], batch_size, accelerator.process_index, accelerator.num_processes)
    mine: list[tuple[int, torch.Tensor]] = []
    bar = progress_bar(shards, desc, enabled=progress and accelerator.is_local_main_process)
    for idx in bar:
        batch = send_to_device(collate([ds[i] for i in idx]), accelerator.device)
        with accelerator.autocast():
            rows = fn(batch)
        mine += [(i, r.float().cpu()) for i, r in zip(idx, rows)]
    allp = gather_object(mine) if accelerator.num_processes > 1 else mine
    out: list[torch.Tensor | None] = [None] * len(ds)
    for i, r in allp:
        out[i] = r
    return out  # type: ignore[return-value]


def encode_features(model, ds, collate, batch_size: int, accelerator, desc: str = "encoding", progress: bool = True) -> torch.Tensor:
    """Pooled float32 features [N, H] of every example of tokenized ``ds``, in dataset order."""
    model.eval()
    rows = encode_rows(lambda b: model.encode(**b), ds, collate, batch_size, accelerator, desc, progress)
    return torch.stack(rows) if rows else torch.empty(0)


# ---- on-disk feature cache --------------------------------------------------------------
def fingerprint_model(model: nn.Module) -> str:
    """Hash of the backbone's architecture, config and every weight (what the features depend on)."""
    h = hashlib.sha256()
    backbone = model.backbone
    h.update(type(backbone).__name__.encode())
    cfg = getattr(backbone, "config", None)
    if cfg is not None:
        d = cfg.to_dict()
        for k in ("id2label", "label2id", "_name_or_path", "transformers_version", "architectures", "num_labels"):
            d.pop(k, None)
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    for name, t in sorted(backbone.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def fingerprint_tokens(ds) -> str:
    """Hash of the token ids (and token types) of a tokenized split, in order."""
    import pyarrow as pa

    h = hashlib.sha256()
    if getattr(ds, "_indices", None) is not None:
        ds = ds.flatten_indices()
    for col in ("input_ids", "token_type_ids"):
        if col not in ds.column_names:
            continue
        arr = pa.concat_arrays(ds.data.column(col).chunks) if ds.data.column(col).num_chunks else pa.array([], pa.list_(pa.int64()))
        offsets = np.asarray(arr.offsets, dtype=np.int64)
        values = np.asarray(arr.flatten(), dtype=np.int64)
        h.update(col.encode())
        h.update((offsets - offsets[0] if len(offsets) else offsets).tobytes())
        h.update(values.tobytes())
    return h.hexdigest()


def tokenizer_settings(tokenizer) -> dict:
    return {
        "class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "padding_side": getattr(tokenizer, "padding_side", None),
        "truncation_side": getattr(tokenizer, "truncation_side", None),
        "pad_token_id": tokenizer.pad_token_id,
    }


def feature_key(
    model_fp: str, tokens_fp: str, *, pooling: str, max_length: int, precision: str, tokenizer, layer: int | None = None
) -> tuple[str, dict]:
    """(key, its parts): ``layer`` is the layer the features come from (None: the model's last)."""
    parts = {
        "format": CACHE_FORMAT,
        "model": model_fp,
        "layer": layer,
        "pooling": pooling,
        "max_length": max_length,
        "precision": precision,
        "tokenizer": tokenizer_settings(tokenizer),
        "tokens": tokens_fp,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32], parts


class FeatureCache:
    """Pooled features on disk, one safetensors file per key, written atomically. ``folder`` and ``tensor``: other
    tensors computed once per key (distillation keeps its teachers' logits under ``teachers``)."""

    def __init__(self, root: str | Path, folder: str = "features", tensor: str = "features"):
        self.dir, self.tensor = Path(root) / folder, tensor

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.safetensors"

    def load(self, key: str, n: int) -> torch.Tensor | None:
        from safetensors.torch import load_file

        p = self.path(key)
        if not p.is_file():
            return None
        try:
            feats = load_file(str(p))[self.tensor]
        except Exception:  # a damaged file is a miss, re-encoded and replaced
            return None
        return feats if len(feats) == n else None

    def save(self, key: str, features: torch.Tensor, parts: dict) -> Path:
        from safetensors.torch import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        p = self.path(key)
        tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp")
        meta = {"key": json.dumps(parts, sort_keys=True), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            save_file({self.tensor: features.contiguous()}, str(tmp), metadata=meta)
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)
        return p


def cached_features(
    model,
    tokens,
    tokenizer,
    collate,
    batch_size: int,
    accelerator,
    *,
    pooling: str,
    max_length: int,
    precision: str,
    cache_dir: str | None,
    use_disk: bool = True,
    log=None,
    progress: bool = True,
    layer: int | None = None,
) -> tuple[dict, dict]:
    """{split: FeatureDataset} for every split of ``tokens``, from the disk cache where possible.

    Returns the datasets and stats: ``hits``/``misses`` (split names), ``encode_seconds`` (all
    splits) and ``split_seconds`` (each encoded split).
    """
    cache = FeatureCache(cache_root(cache_dir)) if use_disk else None
    model_fp = fingerprint_model(model) if use_disk else ""
    out, stats = {}, {"hits": [], "misses": [], "encode_seconds": 0.0, "split_seconds": {}, "cache_dir": str(cache.dir) if cache else None}
    for split, ds in tokens.items():
        labels = torch.tensor(ds["labels"])
        feats, key, parts = None, None, None
        if cache is not None:
            key, parts = feature_key(
                model_fp,
                fingerprint_tokens(ds),
                pooling=pooling,
                max_length=max_length,
                precision=precision,
                tokenizer=tokenizer,
                layer=layer,
            )
            feats = cache.load(key, len(ds))
            # Every process must agree on hit or miss: a miss encodes collectively.
            hit = torch.tensor(float(feats is not None), device=accelerator.device)
            if accelerator.num_processes > 1 and accelerator.reduce(hit, "min").item() < 1:
                feats = None
        if feats is not None:
            stats["hits"].append(split)
            if log:
                log(f"features for {split} ({len(ds):,}) from cache {cache.path(key).name}")
        else:
            t0 = time.perf_counter()
            feats = encode_features(model, ds, collate, batch_size, accelerator, f"encoding {split}", progress)
            stats["split_seconds"][split] = round(time.perf_counter() - t0, 3)
            stats["encode_seconds"] += stats["split_seconds"][split]
            stats["misses"].append(split)
            if cache is not None and accelerator.is_main_process:
                cache.save(key, feats, parts)
        out[split] = FeatureDataset(feats, labels, torch.tensor(ds["doc_id"]) if "doc_id" in ds.column_names else None)
    if accelerator.num_processes > 1:
        accelerator.wait_for_everyone()
    return out, stats
