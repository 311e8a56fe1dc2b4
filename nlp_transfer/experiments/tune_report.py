"""What a search leaves in its folder: trials.csv, best.yaml, study.md, plots, and the chosen trial scored on test.

The test split is read here, after the search, for the chosen trial(s) only: the best trial (one objective) or
the trials of the Pareto front (two). Their run directories get their test metrics (``metrics.json``,
``summary.md``) as ``train`` would have written them; every other trial's run directory keeps none.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

from nlp_transfer.config import RecipeConfig
from nlp_transfer.experiments.search_space import recipe_values, set_value, space_yaml

logger = logging.getLogger("nlp_transfer")
PLOTS = {"history": "history.png", "importance": "importance.png", "parallel": "parallel_coordinate.png", "pareto": "pareto_front.png"}


def _finished(study):
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]


def _sign(result) -> int:
    """-1 where the first objective is maximised: ``sign * value`` sorts best first."""
    return -1 if result.directions[0] == "maximize" else 1


def chosen_trials(result) -> list:
    """The best trial, or the Pareto front (best first on the first objective)."""
    if not _finished(result.study):
        return []
    if len(result.directions) == 1:
        return [result.study.best_trial]
    sign = _sign(result)
    return sorted(result.study.best_trials, key=lambda t: sign * t.values[0])


def ranked(result) -> list:
    sign = _sign(result)
    return sorted(_finished(result.study), key=lambda t: (sign * t.values[0], t.number))


def score_on_test(run_dir: Path, base: RecipeConfig, data) -> dict:
    """The saved trial on the test split of its recipe's data (``evaluate RUN`` does the same); written into the run."""
    from nlp_transfer.data.loading import load_data
    from nlp_transfer.inference.predictor import load_run
    from nlp_transfer.reporting.card import write_model_card
    from nlp_transfer.reporting.report import write_summary

    cfg = RecipeConfig.from_yaml(run_dir / "recipe.yaml")
    if cfg.data != base.data or cfg.model.num_labels != base.model.num_labels:
        data = load_data(cfg.data, cfg.model.num_labels)
    ds = data.splits["test"]
    pairs = list(ds["text_pair"]) if "text_pair" in ds.column_names else None
    labels = data.task_type.as_labels(ds["label"], data.labels)
    scores = load_run(run_dir).evaluate(list(ds["text"]), labels, text_pairs=pairs, progress=False).metrics
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["test"] = scores
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_summary(run_dir, cfg, metrics)
    write_model_card(run_dir, cfg.to_dict(), metrics)  # the card's model-index holds the test metrics now
    return scores


def _test_of(trial, base, data) -> dict | None:
    run = Path(trial.user_attrs.get("run_dir", ""))
    if not (run / "metrics.json").is_file():  # trained by a worker on another machine, or removed
        return None
    test = json.loads((run / "metrics.json").read_text()).get("test") or None
    if test is None:
        logger.info(f"trial {trial.number}: chosen; scoring it on the test split")
        test = score_on_test(run, base, data)
    return test


def keep_best(result, k: int, chosen: list) -> list[int]:
    """Remove the run directories of finished trials outside the best ``k`` (the chosen ones stay); their numbers."""
    keep = {t.number for t in ranked(result)[:k]} | {t.number for t in chosen}
    removed = []
    for t in _finished(result.study):
        run = Path(t.user_attrs.get("run_dir", ""))
        if t.number not in keep and run.is_dir():
            shutil.rmtree(run)
            removed.append(t.number)
    return removed


def best_recipe(base: RecipeConfig, params, trial, out: Path) -> RecipeConfig:
    d = base.to_dict()
    values = recipe_values(params, trial.params)
    if trial.user_attrs.get("adapted"):  # its continued-pretrained checkpoint, which tune wrote
        values["model.name_or_path"] = trial.user_attrs["adapted"]
    for k, v in {**values, "output.dir": str(out / "best-run")}.items():
        set_value(d, k, v)
    return RecipeConfig.from_dict(d)


def write_best(result, base: RecipeConfig, params, trial, out: Path) -> Path:
    cfg = best_recipe(base, params, trial, out)
    values = ", ".join(f"{v:.6g}" for v in trial.values)
    head = (
        f"# The best trial ({trial.number}) of study '{result.study.study_name}': validation {result.metric} {values}.\n"
        f"# Train it: nlp-transfer train --config {out / 'best.yaml'} (output.dir={cfg.output.dir})\n"
    )
    path = out / "best.yaml"
    path.write_text(head + cfg.to_yaml())
    return path


def write_trials_csv(result, out: Path) -> Path:
    df = result.study.trials_dataframe(attrs=("number", "state", "value", "params", "datetime_start", "duration", "user_attrs"))
    if len(result.directions) > 1 and "values_0" in df.columns:
        df = df.rename(columns={"values_0": result.metric, "values_1": result.study.user_attrs.get("also") or "objective_2"})
    elif "value" in df.columns:
        df = df.rename(columns={"value": result.metric})
    drop = [c for c in df.columns if c in ("user_attrs_host", "user_attrs_pid")]
    path = out / "trials.csv"
    df.drop(columns=drop).to_csv(path, index=False)
    return path


def importances(result) -> dict[str, float]:
    import optuna

    if len({tuple(sorted(t.params.items())) for t in _finished(result.study)}) < 2:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(result.study, target=lambda t: t.values[0])
    except (RuntimeError, ValueError, ZeroDivisionError):  # one value of every parameter, or no variance
        return {}


def write_plots(result, out: Path) -> dict[str, Path]:
    """Optuna's matplotlib plots: history, importances, parallel coordinates (and the Pareto front)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vm

    target = (lambda t: t.values[0]) if len(result.directions) > 1 else None
    jobs = {
        "history": lambda: vm.plot_optimization_history(result.study, target=target, target_name=result.metric),
        "importance": lambda: vm.plot_param_importances(result.study, target=target, target_name=result.metric),
        "parallel": lambda: vm.plot_parallel_coordinate(result.study, target=target, target_name=result.metric),
    }
    if len(result.directions) > 1:
        jobs["pareto"] = lambda: vm.plot_pareto_front(result.study, target_names=[result.metric, result.study.user_attrs.get("also")])
    files = {}
    for name, make in jobs.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = make()
        except (RuntimeError, ValueError, ZeroDivisionError, IndexError) as e:  # too few trials for this plot
            logger.info(f"no {PLOTS[name]}: {e}")
            continue
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        fig.savefig(out / PLOTS[name], dpi=100, bbox_inches="tight")
        plt.close(fig)
        files[name] = out / PLOTS[name]
    return files


def dashboard_command(url: str) -> str:
    where = url[len("journal:") :] if url.startswith("journal:") else url
    return f"optuna-dashboard {where}"


def write_outputs(result, base: RecipeConfig, params, opts, data) -> None:
    """Every output of the search, from the whole study (all workers' trials)."""
    out = Path(opts.out)
    chosen = chosen_trials(result)
    result.chosen = [
        {"number": t.number, "values": list(t.values), "params": recipe_values(params, t.params), "test": _test_of(t, base, data)}
        for t in chosen
    ]
    removed = keep_best(result, opts.keep_best, chosen) if opts.keep_best is not None else []
    files = {"trials": write_trials_csv(result, out)}
    if chosen:
        files["best"] = write_best(result, base, params, chosen[0], out)
    files.update(write_plots(result, out))
    path = out / "study.md"
    path.write_text(study_markdown(result, base, params, files, removed))
    files["study"] = path
    result.files = files


# ---- study.md ---------------------------------------------------------------------------------
def _states(study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def _cell(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _best_table(result, keys: list[str], n: int = 10) -> list[str]:
    also = result.study.user_attrs.get("also")
    head = f"| trial | validation {result.metric} |" + (f" {also} |" if also else "") + " epochs | "
    head += " | ".join(k.replace("|", "\\|") for k in keys) + " |"
    lines = [head, "|---:|---:|" + ("---:|" if also else "") + "---:|" + "---|" * len(keys)]
    for t in ranked(result)[:n]:
        row = f"| {t.number} | {t.values[0]:.4f} |" + (f" {_cell(t.values[1])} |" if also else "")
        row += f" {t.user_attrs.get('epochs_run', '-')} | " + " | ".join(_cell(t.params[k]) if k in t.params else "-" for k in keys) + " |"
        lines.append(row)
    return lines


def _pruning_lines(study) -> list[str]:
    run, saved, pruned = _epoch_counts(study)
    if not pruned:
        return []
    share = f" ({saved / (run + saved):.0%} of the epochs the finished and pruned trials planned)" if run + saved else ""
    return ["## Pruning", "", f"{pruned} trial(s) pruned; epochs saved by pruning: {saved}{share}.", ""]


def _failure_lines(study) -> list[str]:
    failed = [t for t in study.get_trials(deepcopy=False) if t.state.name == "FAIL"]
    if not failed:
        return []
    lines = ["## Failed trials", "", "| trial | values | error |", "|---:|---|---|"]
    for t in failed:
        err = t.user_attrs.get("error", "its worker stopped (queued again)").replace("|", "/")
        lines.append(f"| {t.number} | {', '.join(f'{k}={_cell(v)}' for k, v in t.params.items())} | {err} |")
    return lines + [""]


def _chosen_lines(result) -> list[str]:
    lines = []
    for c in result.chosen:
        test = c["test"]
        if test is None:
            lines.append(f"- trial {c['number']}: its run directory is not on this machine; score it with `nlp-transfer evaluate RUN`")
            continue
        shown = ", ".join(f"{k} {test[k]:.4f}" for k in ("accuracy", "f1_macro", "f1_micro", "mse", "mae") if k in test)
        lines.append(f"- trial {c['number']}: test {shown}")
    return lines


def study_markdown(result, base: RecipeConfig, params, files: dict, removed: list[int]) -> str:
    study = result.study
    keys = [p.name for p in params]
    counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(_states(study).items()))
    lines = [
        f"# Study `{study.study_name}`",
        "",
        f"Recipe `{base.name}` ({base.model.name_or_path}, transfer.mode {base.transfer.mode}); objective: validation "
        f"`{result.metric}` ({result.directions[0]})"
        + (f", and {study.user_attrs.get('also')} (minimize): a Pareto front" if len(result.directions) > 1 else "")
        + ".",
        f"Trials: {counts}. Storage: `{result.storage_url}`.",
        "",
        "## Best trials",
        "",
        *(_best_table(result, keys) if _finished(study) else ["No trial finished."]),
        "",
    ]
    if result.chosen:
        which = "The chosen trial" if len(result.chosen) == 1 else "The Pareto front"
        lines += [f"{which}, scored on the test split after the search (no trial saw it before):", "", *_chosen_lines(result), ""]
    if "best" in files:
        lines += [f"Its recipe: `{files['best'].name}` (`nlp-transfer train --config {files['best']}`).", ""]
    imp = importances(result)
    if imp:
        lines += ["## Parameter importances", "", "| parameter | importance |", "|---|---:|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in imp.items()] + [""]
    lines += _pruning_lines(study) + _failure_lines(study)
    if removed:
        lines += [
            f"Run directories removed (outside the best {len(ranked(result)) - len(removed)}): trials {', '.join(map(str, removed))}.",
            "",
        ]
    for name in ("history", "importance", "parallel", "pareto"):
        if name in files:
            lines += [f"![{name}]({files[name].name})", ""]
    lines += ["## Search space", "", "```yaml", space_yaml(params).rstrip(), "```", ""]
    lines += ["## Dashboard", "", f"`{dashboard_command(result.storage_url)}` (pip install optuna-dashboard)", ""]
    return "\n".join(lines)


# ---- a results block (--readme) --------------------------------------------------------------------
def _wall_seconds(study) -> tuple[float, float]:
    """(first start to last end, the sum of the trials' own durations), over every trial of the study."""
    spans = [(t.datetime_start, t.datetime_complete) for t in study.get_trials(deepcopy=False) if t.datetime_start and t.datetime_complete]
    if not spans:
        return 0.0, 0.0
    wall = (max(e for _, e in spans) - min(s for s, _ in spans)).total_seconds()
    return wall, sum((e - s).total_seconds() for s, e in spans)


def _epoch_counts(study) -> tuple[int, int, int]:
    """(epochs run, epochs the pruned trials would have run on, trials pruned)."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    run = sum(int(t.user_attrs.get("epochs_run", 0)) for t in trials)
    saved = sum(max(int(t.user_attrs.get("epochs_planned", 0)) - int(t.user_attrs.get("epochs_run", 0)), 0) for t in pruned)
    return run, saved, len(pruned)


def _shown(v) -> str:
    return "null" if v is None else _cell(v)


def _results_rows(result, top: int) -> list:
    """The finished trials by their value, then the pruned ones by the last value they reported: at most ``top``."""
    from optuna.trial import TrialState

    sign = _sign(result)
    pruned = [t for t in result.study.get_trials(deepcopy=False) if t.state == TrialState.PRUNED and t.intermediate_values]
    last = {t.number: t.intermediate_values[max(t.intermediate_values)] for t in pruned}
    return (ranked(result) + sorted(pruned, key=lambda t: (sign * last[t.number], t.number)))[:top], last


def _per_choice_lines(result, params, last: dict) -> list[str]:
    """For each categorical key searched without a condition: the best validation value each choice reached (a finished
    trial's value, else the last one a pruned trial reported) and how many trials drew it."""
    sign = _sign(result)
    trials = [t for t in result.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" or t.number in last]
    lines = []
    for p in params:
        if p.type != "categorical" or p.when or len(p.choices) < 2:
            continue
        parts = []
        for choice in p.choices:
            drew = [t for t in trials if p.name in t.params and t.params[p.name] == choice]
            done = [t.values[0] for t in drew if t.state.name == "COMPLETE"]
            if done:
                parts.append(f"{_shown(choice)} {min(done, key=lambda v: sign * v):.4f} ({len(drew)} trials)")
            elif drew:
                parts.append(
                    f"{_shown(choice)} {min((last[t.number] for t in drew), key=lambda v: sign * v):.4f} pruned ({len(drew)} trials)"
                )
            else:
                parts.append(f"{_shown(choice)}: not drawn")
        lines += [f"Best validation {result.metric} by `{p.name}`: " + "; ".join(parts) + ".", ""]
    return lines


def results_markdown(result, base: RecipeConfig, params, space: str, top: int = 12) -> str:
    """The search in a few lines and a table of its best trials (then the pruned ones): what a results page shows."""
    from nlp_transfer.utils.environment import cpu_model

    study = result.study
    counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(_states(study).items()))
    wall, summed = _wall_seconds(study)
    run, saved, pruned = _epoch_counts(study)
    share = f"{saved / (run + saved):.0%}" if run + saved else "0%"
    keys = [p.name for p in params]
    lines = [
        f"Recipe `{base.name}`, space `{space}`; objective: validation `{result.metric}`. "
        f"{len(study.trials)} trials ({counts}) in {wall / 60:.1f} min of wall time ({summed / 60:.1f} min of trial time), "
        f"on {cpu_model() or 'this machine'}. Pruning stopped {pruned} trial(s) and saved {saved} of the {run + saved} epochs "
        f"the finished and pruned trials planned ({share}).",
        "",
        f"| trial | state | validation {result.metric} | epochs run | " + " | ".join(f"`{k}`".replace("|", "\\|") for k in keys) + " |",
        "|---:|---|---:|---:|" + "---|" * len(keys),
    ]
    rows, last = _results_rows(result, top)
    for t in rows:
        value = t.values[0] if t.state.name == "COMPLETE" else last[t.number]
        cells = [_shown(t.params[k]) if k in t.params else "" for k in keys]
        lines.append(
            f"| {t.number} | {t.state.name.lower()} | {value:.4f} | {t.user_attrs.get('epochs_run', '-')} | " + " | ".join(cells) + " |"
        )
    lines += ["", *_per_choice_lines(result, params, last)]
    for c in result.chosen:
        test = c["test"] or {}
        shown = ", ".join(f"{k} {test[k]:.4f}" for k in ("accuracy", "f1_macro", "mse") if k in test)
        lines.append(f"The chosen trial ({c['number']}) on the test split, read once after the search: {shown or 'not on this machine'}.")
    return "\n".join(lines)
