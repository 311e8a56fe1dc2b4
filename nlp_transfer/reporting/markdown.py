"""Markdown pieces shared by the reports: per-class and confusion tables, label balance, table cells, loading instructions."""

from __future__ import annotations


def cell(text: str, limit: int = 160) -> str:
    """Text fit for one Markdown table cell."""
    t = " ".join(text.split()).replace("|", "\\|")
    return t if len(t) <= limit else t[: limit - 1] + "…"


def per_class_table(metrics: dict) -> str:
    """A Markdown table of per-class precision, recall, F1 and support."""
    thresholds = metrics.get("thresholds")  # multi-label: the decision threshold of each label
    extra = " threshold |" if thresholds else ""
    rows = ["| class | precision | recall | F1 | support |" + extra, "|---|---:|---:|---:|---:|" + ("---:|" if thresholds else "")]
    for i, (name, m) in enumerate(metrics["per_class"].items()):
        cell = f" {thresholds[i]:.2f} |" if thresholds else ""
        rows.append(f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']} |" + cell)
    return "\n".join(rows)


def confusion_table(metrics: dict) -> str:
    """A Markdown confusion matrix: rows are true labels, columns predictions."""
    names = metrics["labels"]
    rows = ["| true \\ predicted | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for name, row in zip(names, metrics["confusion_matrix"]):
        rows.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(rows)


def label_balance_table(label_counts: dict[str, dict[str, int]], sizes: dict[str, int] | None = None) -> str:
    """Markdown: one row per split, examples per label with its share of the split's examples
    (``sizes``; without them the counts' sum: right when every example has one label)."""
    labels = list(next(iter(label_counts.values())))
    rows = ["| split | examples | " + " | ".join(labels) + " |", "|---|---:|" + "---:|" * len(labels)]
    for split, counts in label_counts.items():
        n = sizes[split] if sizes else sum(counts.values())
        cells = [f"{counts[c]:,} ({counts[c] / max(n, 1):.1%})" for c in labels]
        rows.append(f"| {split} | {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def loading_instructions(manifest) -> str:
    """Markdown: how to load the run in this directory (written into its report)."""
    cls = manifest.transformers_class
    lines = [
        "With nlp-transfer (any run):",
        "",
        "```python",
        "from nlp_transfer import load_run",
        "",
        'predictor = load_run("<this directory>")',
        'predictions = predictor.predict(["some text"])   # labels; predictions.probabilities: one row per text',
        "```",
        "",
    ]
    if cls:
        lines += [
            f"With plain transformers (this run's pooling and head are {cls}'s own, so the logits are the same):",
            "",
            "```python",
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
            "",
            'model = AutoModelForSequenceClassification.from_pretrained("<this directory>")',
            'tokenizer = AutoTokenizer.from_pretrained("<this directory>")',
            "```",
        ]
    elif manifest.adapter:
        base = manifest.adapter.get("base_checkpoint")
        lines += [
            f"An adapter run ({manifest.adapter.get('method')}): `adapter_config.json` and `adapter_model.safetensors` hold "
            f"the adapter in peft's format, on the base checkpoint `{base}`, which is not saved here (`load_run` loads it "
            "and checks its weights against the fingerprint in `nlp_transfer.json`). With peft alone: "
            f'`PeftModel.from_pretrained(AutoModel.from_pretrained("{base}"), "<this directory>")` gives the backbone; '
            "the pooling and head are in `nlp_transfer.json` and `head.safetensors`. "
            "`python scripts/export.py <this directory> OUT --merge` writes a run with the adapter folded into the weights.",
        ]
    else:
        note = manifest.transformers_note or "the pooling or head is not the architecture's own"
        lines += [
            f"Not loadable as `AutoModelForSequenceClassification`: {note}. `config.json` and `model.safetensors` "
            "hold the backbone (`AutoModel.from_pretrained` reads them); the pooling and head are in "
            "`nlp_transfer.json` and `head.safetensors`, which `load_run` puts together.",
        ]
    return "\n".join(lines)
