"""Tokens and batches: tokenize once, pad dynamically, group similar lengths.

Tokenization goes through :mod:`nlp_transfer.data.chunking` (truncation or sliding windows);
batches are padded to the longest example (a multiple of 8) and, in training, drawn so that
similar lengths share a batch (less padding, the same examples per epoch).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import datasets
import numpy as np
import torch

from nlp_transfer.data.chunking import LongTextSpec, encode

# Columns a split may have besides text and label that go into its token rows: a distillation transfer set's
# teacher outputs and whether the row has a label (nlp_transfer/training/distill.py).
CARRIED_COLUMNS = ("teacher", "labelled")


def tokenize(data: datasets.DatasetDict, tokenizer, max_length: int, spec=None) -> datasets.DatasetDict:
    """Token ids per example (no padding: batches are padded dynamically), plus ``length``.

    ``spec`` (a :class:`nlp_transfer.data.chunking.LongTextSpec`) chooses the truncation or the
    sliding windows; with chunking a text becomes several rows, each with the text's label
    and its index in the split as ``doc_id``. Columns of :data:`CARRIED_COLUMNS` are kept (a window: its text's).
    """
    spec = spec or LongTextSpec(max_length)
    has_pair = "text_pair" in data["train"].column_names

    def fn(batch, indices):
        enc = encode(tokenizer, batch["text"], batch["text_pair"] if has_pair else None, spec)
        doc = enc.pop("doc_id")  # position within this batch
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        enc["labels"] = [batch["label"][d] for d in doc]
        for col in CARRIED_COLUMNS:  # every window of a text carries the text's values
            if col in batch:
                enc[col] = [batch[col][d] for d in doc]
        if spec.chunking:
            enc["doc_id"] = [indices[d] for d in doc]
        return enc

    return datasets.DatasetDict(
        {k: ds.map(fn, batched=True, with_indices=True, remove_columns=ds.column_names, desc="tokenizing") for k, ds in data.items()}
    )


def tokenize_texts(texts: list[str], tokenizer, max_length: int, offsets: bool = False) -> datasets.Dataset:
    """Token ids (and ``length``) of unlabelled ``texts``, truncated to ``max_length``; ``offsets``: each token's
    character span too (whole-word masking finds words from them)."""

    def enc(b):
        out = tokenizer(b["text"], truncation=True, max_length=max_length, return_offsets_mapping=offsets)
        out["length"] = [len(x) for x in out["input_ids"]]
        return out

    ds = datasets.Dataset.from_dict({"text": list(texts)})
    return ds.map(enc, batched=True, remove_columns=["text"], desc="tokenizing")


class PadCollator:
    """Pads a list of tokenized examples to the longest (rounded up to a multiple of 8)."""

    def __init__(self, tokenizer, pad_to_multiple_of: int | None = 8):
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        feats = [{k: v for k, v in ex.items() if k != "length"} for ex in examples]
        return dict(self.tokenizer.pad(feats, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"))


class LengthGroupedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of similar-length examples, in random order (train) or longest-first (eval).

    Training: shuffle, cut into mega-batches of ``50 * batch_size``, sort each by length,
    cut into batches, shuffle the batches. Deterministic given ``seed`` and the epoch set
    with :meth:`set_epoch`, so every process (and a resumed run) sees the same order.

    With ``weights`` (per-example probabilities, ``train.sampler: weighted``) an epoch is
    ``len(lengths)`` examples drawn with replacement instead of a permutation; the drawn
    examples are then grouped by length exactly as above, so length grouping still saves
    padding and does not change which examples are drawn.

    ``short_last`` keeps the one short batch at the end. Multi-process runs need it:
    accelerate's ``BatchSamplerShard`` deals batches round-robin and expects only the last one
    to be short; a short batch in the middle makes it drop a pair of batches.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        group: bool = True,
        weights: np.ndarray | None = None,
        short_last: bool = False,
    ):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.group = group
        self.weights = weights
        self.short_last = short_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        n, bs = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = np.argsort(-self.lengths, kind="stable") if self.group else np.arange(n)
            yield from (order[i : i + bs].tolist() for i in range(0, n, bs))
            return
        rng = np.random.default_rng(self.seed + self.epoch)
        perm = rng.permutation(n) if self.weights is None else rng.choice(n, size=n, replace=True, p=self.weights)
        if self.group:
            mega = bs * 50
            perm = np.concatenate(
                [c[np.argsort(-self.lengths[c], kind="stable")] for c in np.array_split(perm, max(1, math.ceil(n / mega)))]
            )
        batches = [perm[i : i + bs].tolist() for i in range(0, n, bs)]
        if self.group:
            batches = [batches[i] for i in rng.permutation(len(batches))]
            if self.short_last:
                batches.sort(key=lambda b: len(b) < bs)  # stable: only the short batch moves
        yield from batches
