"""Why did the run predict that? Integrated Gradients on the token embeddings, merged to words.

    ex = load_run("runs/rt-minilm-feature_extraction").explain(["a gorgeous, moving film that never quite earns its ending"])[0]
    ex.label, ex.score               # 'fresh', 0.685 (calibrated)
    ex.words                         # [('a', 0.30), ('gorgeous', 1.38), (',', 0.06), ('moving', 0.12), ..., ('ending', -1.05)]
    ex.delta                         # 2e-06: captum's convergence delta, sum of attributions - (F(text) - F(baseline))

Integrated Gradients (Sundararajan et al. 2017) with captum's ``LayerIntegratedGradients`` on the
backbone's input embeddings: the baseline is the same input with every text token replaced by the
padding token (special tokens and a prompt's words kept), and the explained output is the logit of
the predicted label (multi-label: of the most probable label; regression: the value). Attributions
sum, up to the convergence delta, to the logit minus the baseline's logit (completeness); a
positive one pushed the text towards the explained label. Token attributions are summed over the
embedding dimensions and then over the tokens of each word (the tokenizer's own word split).

Long texts are explained window by window, as the run predicts them: with chunking every window's
attributions are computed and joined back to the words of the whole text, each weighted as the
run aggregates windows (``mean``: 1/number of windows, so the joined attributions again sum to the
text's logit minus the baseline's; ``max``: the window that gives the label its largest logit).
Truncated texts: words outside the kept tokens get no attribution (``None``).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nlp_transfer.data.chunking import prompt_tokens, special_template, truncate, window_starts
from nlp_transfer.errors import ModelError
from nlp_transfer.utils.extras import require_extra
from nlp_transfer.utils.progress import progress as progress_bar

N_STEPS = 50


@dataclass
class Explanation:
    """Word attributions of one text towards one label (see the module docstring)."""

    text: str
    label: str  # the explained output: the predicted label (multi-label: the most probable one)
    score: float  # its probability (calibrated where the run is), or the predicted value (regression)
    words: list[tuple[str, float | None]]  # (word, attribution) in text order; None: not seen (truncated away)
    delta: float  # captum's convergence delta, joined as the windows are
    logit: float  # the explained logit of the text (windows aggregated)
    baseline_logit: float  # the same for the baseline (text tokens replaced by padding)
    windows: int = 1
    token_attributions: list[list[tuple[str, float]]] = field(default_factory=list, repr=False)  # per window

    @property
    def total(self) -> float:
        """The sum of the word attributions (completeness: ``logit - baseline_logit + delta``, up to rounding)."""
        return float(sum(a for _, a in self.words if a is not None))

    def to_record(self) -> dict:
        return {
            "explained_label": self.label,
            "attributions": [[w, None if a is None else round(a, 6)] for w, a in self.words],
            "attribution_delta": round(self.delta, 6),
        }

    def as_text(self, digits: int = 2) -> str:
        """``word(+0.12) word(-0.03) ...``: the words with their attributions."""
        return " ".join(f"{w}({a:+.{digits}f})" if a is not None else w for w, a in self.words)


def _word_spans(tokenizer, text: str) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """(token ids of ``text``, the word index of each token, each word's character span), no special tokens."""
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            f"explanations merge tokens to words with a fast tokenizer; {type(tokenizer).__name__} is not one "
            "(save the run with a tokenizers-backed tokenizer)"
        )
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids, offsets, wids = enc["input_ids"], enc["offset_mapping"], enc.word_ids()
    # Tokens of one word (the pre-tokenizer's split) share a word index; a word's span covers its tokens.
    spans: dict[int, list[int]] = {}
    token_word = []
    for k, (w, (a, b)) in enumerate(zip(wids, offsets)):
        w = k if w is None else w
        if w not in spans:
            spans[w] = [a, b]
        spans[w][0], spans[w][1] = min(spans[w][0], a), max(spans[w][1], b)
        token_word.append(w)
    order = {w: i for i, w in enumerate(spans)}
    return ids, [order[w] for w in token_word], [tuple(v) for v in spans.values()]


class _Explainer:
    """Windows of a text as the run builds them, and Integrated Gradients over each."""

    def __init__(self, predictor, n_steps: int, internal_batch_size: int | None):
        require_extra("trust", "explaining predictions", ModelError, ("captum",))
        from captum.attr import LayerIntegratedGradients

        self.p, self.model, self.tok, self.spec = predictor, predictor.model, predictor.tokenizer, predictor.spec
        self.n_steps, self.internal_batch_size = n_steps, internal_batch_size
        self.template = special_template(self.tok, pair=False)
        self.before, self.after, self.lead = prompt_tokens(self.tok, self.spec.prompt)
        t = self.template
        self.budget = self.spec.max_length - len(t.prefix) - len(t.suffix) - len(self.before) - len(self.after)
        if self.budget < 1:
            raise ModelError(f"model.max_length={self.spec.max_length} leaves no room for text tokens to explain")
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else (self.tok.unk_token_id or 0)
        self.pad_id = int(pad)
        embeddings = self.model.backbone.get_input_embeddings()
        self.lig = LayerIntegratedGradients(self._forward, embeddings)

    def _forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)["logits"].float()

    def windows(self, n_tokens: int) -> list[list[int]]:
        """Token positions (of the text's tokens) in each window: sliding windows, or the kept tokens once."""
        s = self.spec
        if s.chunking:
            size = self.budget
            return [
                list(range(a, min(a + size, n_tokens))) for a in window_starts(n_tokens, size, min(s.chunk_stride, size - 1), s.max_chunks)
            ]
        return [truncate(list(range(n_tokens)), self.budget, s.truncation, s.head_fraction)]

    def _inputs(self, ids: list[int], positions: list[int]) -> tuple[dict, int]:
        row = self.template.build(self.before + [ids[i] for i in positions] + self.after)
        dev = self.p.device
        batch = {k: torch.tensor([v], device=dev) for k, v in row.items()}
        return batch, len(self.template.prefix) + len(self.before)

    def explain(self, text: str, target: int | None) -> dict:
        ids, token_word, spans = _word_spans(self.tok, self.lead + text)
        wins = self.windows(len(ids))
        batches = [self._inputs(ids, w) for w in wins]
        with torch.no_grad():
            logits = torch.cat([self._forward(**b) for b, _ in batches])  # [W, C]
        doc = logits.mean(0) if self.spec.chunk_aggregate == "mean" else logits.max(0).values
        if target is None:
            target = int(doc.argmax()) if doc.numel() > 1 else 0
        if self.spec.chunk_aggregate == "mean" or len(wins) == 1:
            weights = [1.0 / len(wins)] * len(wins)
        else:  # max: the text's logit for the label is that window's
            best = int(logits[:, target].argmax())
            weights = [1.0 if i == best else 0.0 for i in range(len(wins))]
        word_attr = np.zeros(len(spans))
        seen = np.zeros(len(spans), dtype=bool)
        delta = baseline = 0.0
        tokens = []
        for (batch, start), positions, w in zip(batches, wins, weights):
            if w == 0.0:
                continue
            ids_in = batch["input_ids"]
            base = ids_in.clone()
            base[0, start : start + len(positions)] = self.pad_id
            extra = (batch["attention_mask"], batch.get("token_type_ids"))
            attr, d = self.lig.attribute(
                ids_in,
                baselines=base,
                target=target,
                additional_forward_args=extra,
                n_steps=self.n_steps,
                internal_batch_size=self.internal_batch_size,
                return_convergence_delta=True,
            )
            per_token = attr.sum(-1)[0].detach().float().cpu().numpy()
            with torch.no_grad():
                baseline += w * float(self._forward(base, *extra)[0, target])
            delta += w * float(d.sum())
            content = per_token[start : start + len(positions)]
            np.add.at(word_attr, [token_word[i] for i in positions], w * content)
            seen[[token_word[i] for i in positions]] = True
            # Special tokens and a prompt's words are the same in the baseline: their attributions are exactly 0.
            tokens.append([(self.tok.convert_ids_to_tokens(ids[i]), float(a)) for i, a in zip(positions, content)])
        full = self.lead + text
        # Byte-level BPE offsets may include the space before a word: words are shown without it.
        words = [(full[a:b].strip(), float(word_attr[i]) if seen[i] else None) for i, (a, b) in enumerate(spans)]
        return {
            "target": target,
            "logit": float(doc[target]),
            "baseline_logit": baseline,
            "delta": delta,
            "words": words,
            "windows": len(wins),
            "tokens": tokens,
        }


def explain_texts(
    predictor,
    texts: Sequence[str],
    targets: Sequence[int] | None = None,
    n_steps: int = N_STEPS,
    internal_batch_size: int | None = None,
    progress: bool = False,
) -> list[Explanation]:
    """An :class:`Explanation` per text (see the module docstring); ``targets``: the output index to explain per
    text (default: the predicted label). Sentence pairs are not explained."""
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not one string (wrap it: [text])")
    texts = list(texts)
    if not texts:
        return []
    preds = predictor.predict(texts)
    scores = getattr(preds, "probabilities", None)
    if targets is None:
        targets = [int(i) for i in np.asarray(scores).argmax(-1)] if scores is not None else [0] * len(texts)
    explainer = _Explainer(predictor, n_steps, internal_batch_size)
    out = []
    model = predictor.model
    was_training = model.training
    model.eval()
    try:
        for i in progress_bar(range(len(texts)), "explaining", enabled=progress):
            r = explainer.explain(texts[i], int(targets[i]))
            t = r["target"]
            label = predictor.labels[t] if scores is not None else "value"
            score = float(scores[i, t]) if scores is not None else float(np.asarray(preds.values)[i])
            tokens = r.pop("tokens")
            out.append(Explanation(texts[i], label, score, r["words"], r["delta"], r["logit"], r["baseline_logit"], r["windows"], tokens))
    finally:
        model.train(was_training)
    return out


# ---- the HTML report ------------------------------------------------------------------------
def _colour(a: float | None, scale: float) -> str:
    if a is None or scale <= 0:
        return "transparent"
    x = min(abs(a) / scale, 1.0)
    return f"rgba(0, 150, 0, {x:.2f})" if a > 0 else f"rgba(210, 0, 0, {x:.2f})"


def explanation_html(ex: Explanation) -> str:
    """The words of one explanation on a green (towards the label) to red (against it) background."""
    scale = max((abs(a) for _, a in ex.words if a is not None), default=0.0)
    spans = [
        f'<span style="background:{_colour(a, scale)}" title="{"" if a is None else f"{a:+.4f}"}">{html.escape(w)}</span>'
        for w, a in ex.words
    ]
    return " ".join(spans)


def write_explanations_html(path: str | Path, sections: list[tuple[str, list[tuple[dict, Explanation]]]], title: str) -> Path:
    """``explanations.html``: per section, each example's facts (``dict``: column -> value) and its coloured words."""
    css = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.7}"
        ".ex{border-top:1px solid #ccc;padding:.6em 0}.facts{color:#444;font-size:90%}span{padding:1px 2px;border-radius:3px}"
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{css}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Integrated Gradients (captum) on the token embeddings, merged to words: <span style='background:rgba(0,150,0,.6)'>"
        "green</span> pushed the text towards the explained (predicted) label, <span style='background:rgba(210,0,0,.6)'>red"
        "</span> against it, shaded by size within each example (hover for the value). Delta: captum's convergence delta, "
        "the gap between the attributions' sum and the logit's change from the all-padding baseline.</p>",
    ]
    for heading, items in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if not items:
            parts.append("<p>none</p>")
        for facts, ex in items:
            cells = "; ".join(f"{html.escape(str(k))}: <b>{html.escape(str(v))}</b>" for k, v in facts.items())
            parts.append(
                f"<div class='ex'><div class='facts'>{cells}; explained: <b>{html.escape(ex.label)}</b>, logit "
                f"{ex.logit:+.3f} (baseline {ex.baseline_logit:+.3f}), delta {ex.delta:+.4f}"
                f"{f', {ex.windows} windows' if ex.windows > 1 else ''}</div><div>{explanation_html(ex)}</div></div>"
            )
    parts.append("</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def least_confident(predictions, n: int) -> list[int]:
    """Rows whose decision was closest: the lowest top probability (single-label), the probability nearest its
    threshold (multi-label); none for regression."""
    probs = getattr(predictions, "probabilities", None)
    if probs is None:
        return []
    if hasattr(predictions, "thresholds"):
        margin = np.abs(probs - np.asarray(predictions.thresholds)).min(-1)
    else:
        margin = probs.max(-1)
    return [int(i) for i in np.argsort(margin, kind="stable")[:n]]


def explain_evaluation(
    predictor, ev, path: str | Path, n: int = 10, n_steps: int = N_STEPS, title: str = "Explanations", progress: bool = False
) -> Path:
    """``explanations.html`` of an evaluation: its ``n`` most confident mistakes and its ``n`` least confident examples."""
    wrong = ev.misclassified()[:n] if ev.task.has_classes else []
    unsure = least_confident(ev.predictions, n)
    rows = [r["row"] for r in wrong] + unsure
    exs = explain_texts(predictor, [ev.texts[i] for i in rows], n_steps=n_steps, progress=progress)
    by_row = dict(zip(range(len(rows)), exs))
    true = ev.task.as_labels(ev.y_true, ev.classes)
    preds = ev.predictions

    def facts(i: int) -> dict:
        score = getattr(preds, "scores", None)
        f = {"row": i, "true": true[i], "predicted": preds[i]}
        if score is not None:
            f["score"] = f"{float(score[i]):.3f}"
        return f

    sections = [
        (f"Misclassified, most confident first ({len(wrong)})", [(facts(r["row"]), by_row[k]) for k, r in enumerate(wrong)]),
        (f"Least confident ({len(unsure)})", [(facts(i), by_row[len(wrong) + k]) for k, i in enumerate(unsure)]),
    ]
    return write_explanations_html(path, sections, title)
