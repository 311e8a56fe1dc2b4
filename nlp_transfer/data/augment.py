"""Texts made from the training texts for a teacher to label (Tang et al. 2019, "Distilling task-specific
knowledge from BERT into simple neural networks", section 3.2), without the part-of-speech tagger.

A copy of a text goes word by word (words: runs of non-space characters). Each word, with one uniform draw:

* below ``p_mask``: becomes the mask token (the student tokenizer's, e.g. ``[MASK]``);
* below ``p_mask + p_replace``: becomes another word drawn uniformly from the distinct words of the
  training texts (Tang et al. draw one of the same part of speech);
* otherwise it stays.

Then, with probability ``p_ngram``, only a run of ``n`` consecutive words is kept, ``n`` uniform in
1..``max_ngram`` (shorter texts: all of it). A copy equal to its source is dropped (it would add the same
text again, without its label). Everything draws from one generator seeded by ``seed``.
"""

from __future__ import annotations

import numpy as np


def augment_texts(
    texts: list[str],
    copies: int,
    *,
    p_mask: float,
    p_replace: float,
    p_ngram: float,
    max_ngram: int,
    mask_token: str,
    seed: int,
) -> list[str]:
    """``copies`` augmented texts per text of ``texts`` (fewer where a copy came out unchanged), in text order.

    Examples:
        >>> augment_texts(["a fine film"], 2, p_mask=0.5, p_replace=0.0, p_ngram=0.0, max_ngram=5, mask_token="[MASK]", seed=0)
        ['a [MASK] [MASK]']
        >>> # (the first copy drew no mask and was dropped)
    """
    rng = np.random.default_rng(seed)
    split = [t.split() for t in texts]
    vocab = sorted({w for words in split for w in words})
    out = []
    for words in split:
        if not words:
            continue
        source = " ".join(words)
        for _ in range(copies):
            draws = rng.random(len(words))
            picks = rng.integers(len(vocab), size=len(words))
            new = [mask_token if d < p_mask else vocab[k] if d < p_mask + p_replace else w for w, d, k in zip(words, draws, picks)]
            if rng.random() < p_ngram:
                n = int(rng.integers(1, max_ngram + 1))
                start = int(rng.integers(0, max(len(new) - n, 0) + 1))
                new = new[start : start + n]
            text = " ".join(new)
            if text != source:
                out.append(text)
    return out
