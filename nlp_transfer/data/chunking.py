"""Long documents: truncation strategies and sliding-window chunks.

A text longer than ``model.max_length`` tokens is either truncated or cut into windows:

* ``truncation: head`` keeps the first tokens (the tokenizer's own truncation);
  ``tail`` keeps the last ones; ``head+tail`` keeps the first ``head_fraction`` of the
  budget and the last tokens for the rest (Sun et al. 2019, "How to fine-tune BERT for
  text classification": head 128 + tail 382 of 512 was their best).
* ``chunking: true`` cuts the whole text into windows of ``max_length`` tokens (special
  tokens included) where consecutive windows share ``chunk_stride`` tokens. Each window is
  one example: in training it carries its document's label; in evaluation and prediction
  the document's logits are the mean (or element-wise max) of its windows' logits.

Special tokens are placed by a template read off the tokenizer itself (tokenize a probe
word with and without them), so BERT's ``[CLS] a [SEP] b [SEP]``, RoBERTa's
``<s> a </s></s> b </s>``, a Llama ``<s>`` prefix and GPT-2's nothing all work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nlp_transfer.config import AGGREGATES, TRUNCATIONS
from nlp_transfer.errors import ModelError


@dataclass(frozen=True)
class LongTextSpec:
    """How texts become token windows; saved with the model so a reload does the same."""

    max_length: int = 128
    truncation: str = "head"
    head_fraction: float = 0.25
    chunking: bool = False
    chunk_stride: int = 64
    chunk_aggregate: str = "mean"
    max_chunks: int | None = None
    prompt: str | None = None  # a template with {text}: the text is cut inside it, so the words after it stay

    @property
    def is_default(self) -> bool:
        """Plain head truncation: the tokenizer's own fast path, as before chunking existed."""
        return self.truncation == "head" and not self.chunking and self.prompt is None

    @classmethod
    def from_config(cls, model_cfg) -> LongTextSpec:
        return cls(
            model_cfg.max_length,
            model_cfg.truncation,
            model_cfg.head_fraction,
            model_cfg.chunking,
            model_cfg.chunk_stride,
            model_cfg.chunk_aggregate,
            model_cfg.max_chunks,
            getattr(model_cfg, "prompt", None),
        )

    @classmethod
    def from_meta(cls, meta: dict) -> LongTextSpec:
        """From a saved model's ``nlp_transfer.json`` (runs saved before chunking get the defaults)."""
        d = meta.get("long_text") or {}
        return cls(max_length=meta.get("max_length", 128), **d)

    def to_meta(self) -> dict:
        return {
            "truncation": self.truncation,
            "head_fraction": self.head_fraction,
            "chunking": self.chunking,
            "chunk_stride": self.chunk_stride,
            "chunk_aggregate": self.chunk_aggregate,
            "max_chunks": self.max_chunks,
            "prompt": self.prompt,
        }


# ---- special-token template -------------------------------------------------------------
@dataclass(frozen=True)
class _Template:
    """Special tokens around the content: prefix A middle B suffix, with their token types."""

    prefix: list
    middle: list
    suffix: list
    types: tuple | None  # token type of (prefix, a, middle, b, suffix), or None without token_type_ids

    def build(self, a: list, b: list | None = None) -> dict:
        ids = self.prefix + a + ((self.middle + b) if b is not None else []) + self.suffix
        out = {"input_ids": ids, "attention_mask": [1] * len(ids)}
        if self.types is not None:
            tp, ta, tm, tb, ts = self.types
            parts = [(self.prefix, tp), (a, ta)] + ([(self.middle, tm), (b, tb)] if b is not None else []) + [(self.suffix, ts)]
            out["token_type_ids"] = [t for seq, t in parts for _ in seq]
        return out


def _find(seq: list, sub: list, start: int = 0) -> int:
    for i in range(start, len(seq) - len(sub) + 1):
        if seq[i : i + len(sub)] == sub:
            return i
    return -1


def special_template(tokenizer, pair: bool) -> _Template:
    """Where the tokenizer puts its special tokens, read from how it encodes two probe words."""
    wa, wb = "hello", "world"
    a = tokenizer(wa, add_special_tokens=False)["input_ids"]
    b = tokenizer(wb, add_special_tokens=False)["input_ids"]
    full = tokenizer(wa, wb) if pair else tokenizer(wa)
    ids, types = full["input_ids"], full.get("token_type_ids")
    i = _find(ids, a)
    j = _find(ids, b, i + len(a)) if pair else i + len(a)
    if i < 0 or j < 0:
        raise ModelError(
            f"cannot tell where {type(tokenizer).__name__} puts its special tokens; use model.truncation=head "
            "and model.chunking=false with this tokenizer"
        )
    end = j + len(b) if pair else j
    prefix, middle, suffix = ids[:i], (ids[i + len(a) : j] if pair else []), ids[end:]
    if types is None:
        return _Template(prefix, middle, suffix, None)
    t = lambda k, default=0: types[k] if k < len(types) else default  # noqa: E731
    tt = (t(0), t(i), t(i + len(a)) if middle else t(i), t(j) if pair else 0, t(len(ids) - 1) if suffix else 0)
    return _Template(prefix, middle, suffix, tt)


# ---- which tokens to keep ---------------------------------------------------------------
def truncate(ids: list, keep: int, how: str, head_fraction: float = 0.25) -> list:
    """``keep`` tokens of ``ids``: the first ones (head), the last ones (tail), or both ends."""
    if len(ids) <= keep:
        return list(ids)
    if how == "head":
        return list(ids[:keep])
    if how == "tail":
        return list(ids[len(ids) - keep :]) if keep else []
    if how == "head+tail":
        n_head = int(round(keep * head_fraction))
        return list(ids[:n_head]) + (list(ids[len(ids) - (keep - n_head) :]) if keep - n_head else [])
    raise ModelError(f"unknown truncation '{how}'; use one of {', '.join(TRUNCATIONS)}")


def pair_budget(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
    """Tokens kept of each text of a pair (the longer text is cut first, as "longest_first")."""
    if n_a + n_b <= budget:
        return n_a, n_b
    half = budget // 2
    if n_a <= half:
        return n_a, budget - n_a
    if n_b <= half:
        return budget - n_b, n_b
    # An odd token goes to the longer text (the second on a tie), as the tokenizers library does.
    return (budget - half, half) if n_a > n_b else (half, budget - half)


def window_starts(n: int, size: int, stride: int, max_chunks: int | None = None) -> list[int]:
    """Start offsets of windows of ``size`` tokens over ``n`` tokens, ``stride`` tokens shared
    between neighbours; the last window ends at the last token. At least one window."""
    step = size - stride
    if step < 1:
        raise ModelError(f"model.chunk_stride={stride} leaves no new tokens per window of {size}; lower model.chunk_stride")
    starts = [0]
    while starts[-1] + size < n:
        starts.append(starts[-1] + step)
    return starts[:max_chunks] if max_chunks else starts


# ---- encoding ---------------------------------------------------------------------------
def prompt_tokens(tokenizer, prompt: str | None) -> tuple[list, list, str]:
    """(ids before ``{text}``, ids after it, the whitespace that goes in front of the text); none without a prompt.

    The space between the prompt's words and the text is given to the text (``"Review: {text}"``: the text is
    tokenized as ``" " + text``), so byte-level BPE tokenizers (GPT-2, SmolLM2) see the text's first word as in
    running text, ``" a"``, not a lone space and ``"a"``: the same tokens as the whole prompt tokenized at once.
    """
    if prompt is None:
        return [], [], ""
    head, _, tail = prompt.partition("{text}")
    stripped = head.rstrip()
    ids = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"] if s else []  # noqa: E731
    return ids(stripped), ids(tail), head[len(stripped) :]


def encode(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None, spec: LongTextSpec) -> dict[str, list]:
    """Token ids (no padding) for ``texts`` (and ``pairs``) under ``spec``, plus ``doc_id``:
    the index of each row's text. Without chunking there is one row per text."""
    if spec.is_default:
        enc = dict(tokenizer(list(texts), list(pairs) if pairs is not None else None, truncation=True, max_length=spec.max_length))
        enc["doc_id"] = list(range(len(texts)))
        return enc
    tpl = special_template(tokenizer, pair=pairs is not None)
    before, after, lead = prompt_tokens(tokenizer, spec.prompt)
    budget = spec.max_length - len(tpl.prefix) - len(tpl.middle) - len(tpl.suffix) - len(before) - len(after)
    if budget < 2:
        raise ModelError(
            f"model.max_length={spec.max_length} leaves no room for text after the special tokens"
            + (" and the prompt" if spec.prompt else "")
        )
    ids_a = tokenizer([lead + t for t in texts], add_special_tokens=False, verbose=False)["input_ids"]  # whole texts: no length warning
    ids_b = tokenizer(list(pairs), add_special_tokens=False, verbose=False)["input_ids"] if pairs is not None else [None] * len(ids_a)
    out: dict[str, list] = {}
    for doc, (a, b) in enumerate(zip(ids_a, ids_b)):
        if spec.chunking:
            # A pair keeps (the head of) its second text in every window; the first text is chunked.
            b_kept = truncate(b, min(len(b), budget // 2), "head") if b is not None else None
            size = budget - (len(b_kept) if b_kept is not None else 0)
            rows = [
                tpl.build(before + a[s : s + size] + after, b_kept)
                for s in window_starts(len(a), size, min(spec.chunk_stride, size - 1), spec.max_chunks)
            ]
        else:
            keep_a, keep_b = pair_budget(len(a), len(b), budget) if b is not None else (budget, 0)
            b_kept = truncate(b, keep_b, spec.truncation, spec.head_fraction) if b is not None else None
            rows = [tpl.build(before + truncate(a, keep_a, spec.truncation, spec.head_fraction) + after, b_kept)]
        for row in rows:
            for k, v in row.items():
                out.setdefault(k, []).append(v)
            out.setdefault("doc_id", []).append(doc)
    return out


# ---- aggregation ------------------------------------------------------------------------
def aggregate(logits: torch.Tensor, doc_ids: torch.Tensor, how: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """(documents [D], logits [D, C]): each document's windows' logits, averaged (``mean``) or
    their element-wise maximum (``max``), documents in increasing id order."""
    docs, inverse = torch.unique(doc_ids, sorted=True, return_inverse=True)
    if how not in AGGREGATES:
        raise ModelError(f"unknown chunk aggregation '{how}'; use one of {', '.join(AGGREGATES)}")
    index = inverse.unsqueeze(-1).expand_as(logits)
    if how == "mean":
        sums = torch.zeros(len(docs), logits.shape[1], dtype=logits.dtype, device=logits.device).scatter_add_(0, index, logits)
        counts = torch.bincount(inverse, minlength=len(docs)).to(logits.dtype).unsqueeze(-1)
        return docs, sums / counts
    init = torch.full((len(docs), logits.shape[1]), float("-inf"), dtype=logits.dtype, device=logits.device)
    return docs, init.scatter_reduce_(0, index, logits, reduce="amax")


def per_document(logits: torch.Tensor, labels: torch.Tensor, doc_ids: torch.Tensor, how: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [D, C], labels [D] or [D, L] (multi-label)) per document from per-window logits and labels."""
    docs, doc_logits = aggregate(logits, doc_ids, how)
    doc_labels = torch.empty((len(docs), *labels.shape[1:]), dtype=labels.dtype, device=labels.device)
    doc_labels[torch.searchsorted(docs, doc_ids)] = labels  # every window carries its document's label
    return doc_logits, doc_labels
