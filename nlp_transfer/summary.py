"""Tables that compare finished runs (and a TF-IDF baseline on the same splits)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .config import RecipeConfig
from .errors import ConfigError, ModelError


def _read_run(d: str | Path) -> tuple[dict, RecipeConfig]:
    d = Path(d)
    if not (d / "metrics.json").is_file() or not (d / "recipe.yaml").is_file():
        raise ModelError(f"'{d}' is not a finished run directory (needs metrics.json and recipe.yaml)")
    return json.loads((d / "metrics.json").read_text()), RecipeConfig.from_yaml(d / "recipe.yaml")


def summarize_runs(run_dirs: list[str], baseline: bool = True) -> str:
    """A Markdown table: one row per run (test accuracy, macro F1, wall time), baseline first."""
    runs = [_read_run(d) for d in run_dirs]
    data_cfgs = {json.dumps(cfg.to_dict()["data"], sort_keys=True) for _, cfg in runs}
    if len(data_cfgs) > 1:
        raise ConfigError("the runs use different data settings; compare runs of one dataset and split")
    first_cfg = runs[0][1]
    rows = []
    if baseline:
        from .baselines import tfidf_logreg
        from .data import load_data

        b = tfidf_logreg(load_data(first_cfg.data))
        rows.append(("TF-IDF + logistic regression", "-", b, b["seconds"], "-"))
    for m, cfg in runs:
        env = m["environment"]
        how = f"{cfg.transfer.mode}, {cfg.train.epochs} ep, {env['mixed_precision']}, {env['num_processes']}x {env['device']}"
        tps = m["timing"].get("train_tokens_per_second")
        rows.append((f"{cfg.model.name_or_path} {cfg.transfer.mode}", how, m["test"], m["timing"]["total_seconds"], f"{tps:,.0f}" if tps else "-"))
    sizes = runs[0][0]["data"]["sizes"]
    lines = [
        f"Data: `{first_cfg.data.source or first_cfg.data.train_file}`, train {sizes['train']:,} / validation "
        f"{sizes['validation']:,} / test {sizes['test']:,} (split seed {first_cfg.data.split_seed}); test-set figures.",
        "",
        "| method | settings | test accuracy | test macro F1 | wall time (s) | train tokens/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, how, t, secs, tps in rows:
        lines.append(f"| {name} | {how} | {t['accuracy']:.4f} | {t['f1_macro']:.4f} | {secs:.1f} | {tps} |")
    return "\n".join(lines)


def update_readme(path: str | Path, section: str, text: str) -> None:
    """Replace the block between ``<!-- results:section -->`` and ``<!-- /results:section -->``."""
    p = Path(path)
    src = p.read_text()
    start, end = f"<!-- results:{section} -->", f"<!-- /results:{section} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(src):
        raise ConfigError(f"{p} has no '{start}' ... '{end}' block to update")
    p.write_text(pattern.sub(lambda _: f"{start}\n{text.strip()}\n{end}", src))
