"""Hyperparameter search with Optuna: each trial one ordinary training run, pruned on its validation curve.

    from nlp_transfer.experiments.tune import TuneOptions, tune
    result = tune(cfg, default_space(cfg), TuneOptions(trials=20, out="runs/tune-rt"))
    result.best_recipe          # DIR/best.yaml, ready to train

A trial samples the space (:mod:`nlp_transfer.experiments.search_space`), trains the recipe with those values
through the same set-up, fit and finish as ``train`` (``Trainer.finish(test=False)``: no test metrics), and
returns the best epoch's ``train.metric_for_best`` on validation. A hook reports every epoch's value to the
pruner; a pruned trial stops there and leaves no run directory. Trials that fail (a bad combination of values,
a NaN loss) are recorded FAIL and the search goes on. ``trials`` is the study's total: finished trials in the
storage count, so the same command resumes a killed search and adds nothing to a finished one. The test split
is read once, after the search, for the chosen trial(s) only (:mod:`nlp_transfer.experiments.tune_report`).

Storages: the default SQLite file ``DIR/study.db``, ``journal:PATH`` (Optuna's journal file: several workers on
one machine) or any SQLAlchemy URL (``postgresql://...``: workers on many machines). RDB storages run Optuna's
heartbeat, so a killed worker's trial is marked failed and retried (``RetryFailedTrialCallback``); on every
storage, a RUNNING trial whose worker process on this machine is gone is failed and retried at the next start.
Under ``accelerate launch`` the main process talks to the study and broadcasts each trial's values (and each
pruning decision) so every process trains the same trial.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import os
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlp_transfer.config import RecipeConfig
from nlp_transfer.errors import ConfigError
from nlp_transfer.experiments.search_space import Param, sample, set_value, space_yaml
from nlp_transfer.metrics import LOWER_IS_BETTER
from nlp_transfer.training.hooks import Hook
from nlp_transfer.utils.distributed import close_process_group

logger = logging.getLogger("nlp_transfer")
PRUNERS = ("median", "hyperband", "none")
SAMPLERS = ("tpe", "random")
SECOND_OBJECTIVES = ("seconds", "trainable_params")
HEARTBEAT_SECONDS = 60
TRIAL_SETTINGS = {"output.overwrite": True, "train.save_checkpoints": False, "train.save_every_steps": None, "train.resume": None}


@dataclass
class TuneOptions:
    trials: int
    out: str | Path
    timeout: float | None = None
    storage: str | None = None  # None: sqlite:///DIR/study.db
    study: str | None = None  # None: the recipe's name
    pruner: Any = "median"  # a name of PRUNERS or an optuna pruner
    sampler: str = "tpe"
    seed: int | None = None  # of the sampler (None: the recipe's train.seed)
    keep_best: int | None = None  # keep the run directories of the best K finished trials (None: all)
    also: str | None = None  # a second objective: seconds or trainable_params (a Pareto front)
    progress: bool = False


@dataclass
class TuneResult:
    study: Any  # optuna.Study
    metric: str
    directions: list[str]
    files: dict[str, Path] = field(default_factory=dict)
    chosen: list[dict] = field(default_factory=list)  # the chosen trial(s) with their test metrics
    storage_url: str = ""


# ---- storage ------------------------------------------------------------------------------
def storage_url(opts: TuneOptions) -> str:
    return opts.storage or f"sqlite:///{Path(opts.out) / 'study.db'}"


def check_storage(opts: TuneOptions) -> None:
    """Fail before anything is written when a given storage cannot be opened (the default one is made in DIR)."""
    if opts.storage is None:
        return
    if opts.storage.startswith("journal:"):
        path = Path(opts.storage[len("journal:") :])
        if not path.name:
            raise ConfigError("--storage journal:PATH needs a file path, e.g. journal:runs/tune/journal.log")
        parent = path.parent
        if not parent.is_dir() and parent.resolve() != Path(opts.out).resolve():
            raise ConfigError(f"--storage {opts.storage}: the folder '{parent}' does not exist; create it or choose another path")
        return
    open_storage(opts.storage)


def open_storage(url: str):
    """An Optuna storage for ``url``; :class:`ConfigError` when it cannot be opened."""
    import optuna.storages as st
    from optuna.storages.journal import JournalFileBackend

    if url.startswith("journal:"):
        return st.JournalStorage(JournalFileBackend(url[len("journal:") :]))
    if "://" not in url:
        raise ConfigError(f"--storage {url!r} is not a storage URL; use sqlite:///PATH, journal:PATH or postgresql://USER@HOST/DB")
    beat = int(os.environ.get("NLP_TRANSFER_TUNE_HEARTBEAT", HEARTBEAT_SECONDS))
    # A trial whose worker stopped beating is failed and run again with its values (optuna >= 4.9 names it "stale").
    retry = getattr(st, "RetryHeartbeatStaleTrialCallback", None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeats are "experimental" in optuna
            on_stale = (
                {"heartbeat_stale_trial_callback": retry(max_retry=2)}
                if retry
                else {"failed_trial_callback": st.RetryFailedTrialCallback(max_retry=2)}
            )
            return st.RDBStorage(_with_driver(url), heartbeat_interval=beat, grace_period=2 * beat, **on_stale)
    except Exception as e:  # sqlalchemy's errors (no driver, refused connection, unwritable file) are many
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--storage {url}: cannot open it ({first[:200]})") from None


def _with_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 defaults to psycopg 3, 2.0 to psycopg2."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


def make_pruner(name_or_pruner, epochs: int):
    import optuna

    if not isinstance(name_or_pruner, str):
        return name_or_pruner
    if name_or_pruner == "median":  # from the third finished trial on; never at the last epoch (nothing left to save)
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name_or_pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)
    if name_or_pruner == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner {name_or_pruner!r} is not one of {', '.join(PRUNERS)}")


def make_sampler(name: str, seed: int):
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":  # multi-objective too (MOTPE)
        # multivariate with groups: a conditional space (a mode's own parameters) is modelled per group of keys that
        # occur together; constant_liar: workers running at once do not draw the same values
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    raise ConfigError(f"--sampler {name!r} is not one of {', '.join(SAMPLERS)}")


# ---- several processes: the main one decides, every process trains ------------------------
class Channel:
    """The main process's values, given to every process (accelerate's broadcast); one process: a no-op."""

    def __init__(self):
        import torch
        from accelerate import PartialState

        # Under torchrun without a GPU, gloo processes: accelerate is not told so by torchrun itself.
        several = int(os.environ.get("WORLD_SIZE", "1")) > 1
        forced = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
        state = PartialState(cpu=several and (forced or not torch.cuda.is_available()))
        self.processes, self.is_main = state.num_processes, state.is_main_process

    def share(self, obj):
        if self.processes == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        box = [obj]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def close(self) -> None:
        """The end of the search: the process group the trials kept up goes (every rank together)."""
        if self.processes > 1:
            from accelerate import PartialState

            if not PartialState().fork_launched:  # a notebook launcher's processes keep theirs, as accelerate does
                close_process_group()


class TrialStop(Exception):
    """The pruner stopped the trial (raised on every process; the main one turns it into TrialPruned)."""


class PruneHook(Hook):
    """Each epoch's validation metric to the trial (``trial.report``); stop the trial where the pruner says so."""

    def __init__(self, trial, metric: str, channel: Channel, prune: bool):
        self.trial, self.metric, self.channel, self.prune = trial, metric, channel, prune
        self.epochs = 0

    def on_epoch_end(self, s, record: dict) -> None:
        self.epochs = record["epoch"]
        stop = False
        if self.trial is not None and self.prune:
            self.trial.report(float(record["validation"][self.metric]), record["epoch"])
            stop = record["epoch"] < s.cfg.train.epochs and self.trial.should_prune()
        if self.channel.share(stop):
            s.info(f"pruned after epoch {record['epoch']}: validation {self.metric} {record['validation'][self.metric]:.4f}")
            raise TrialStop(record["epoch"])


# ---- the search -----------------------------------------------------------------------------
class Search:
    """What every trial shares: the recipe, the space, the data (when a trial keeps the recipe's), the objective."""

    def __init__(self, base: RecipeConfig, params: list[Param], opts: TuneOptions, data, metric: str, channel: Channel):
        self.base, self.params, self.opts, self.data, self.metric, self.channel = base, params, opts, data, metric, channel
        self.base_dict = base.to_dict()
        self.out = Path(opts.out)
        self.adapting = any(p.key.startswith("adapt.") for p in params)  # continued pretraining is part of the search

    def recipe(self, number: int, values: dict) -> RecipeConfig:
        d = self.base.to_dict()
        for k, v in {**values, **TRIAL_SETTINGS, "output.dir": str(self.out / "trials" / f"{number:04d}")}.items():
            set_value(d, k, v)
        return RecipeConfig.from_dict(d)

    def train(self, number: int, values: dict, trial=None):
        """One trial's run (on every process); the RunResult, or TrialStop from the pruning hook."""
        import torch

        from nlp_transfer.training import Trainer
        from nlp_transfer.training.hooks import default_hooks

        cfg = self.recipe(number, values)
        if self.adapting and (cfg.adapt.epochs or cfg.adapt.max_steps):
            cfg = self.adapted(cfg, trial)
        hook = PruneHook(trial, self.metric, self.channel, prune=not self.opts.also)
        data = self.data if cfg.data == self.base.data and cfg.model.num_labels == self.base.model.num_labels else None
        trainer = Trainer(cfg, data, progress=self.opts.progress)
        try:
            with trainer:
                trainer.setup()
                trainer.fit(hooks=default_hooks(cfg) + [hook])
                return trainer.finish(test=False, last=False), hook.epochs
        finally:  # nothing of this trial stays in memory for the next one
            del trainer
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def adapted(self, cfg: RecipeConfig, trial=None) -> RecipeConfig:
        """The trial's recipe on its continued-pretrained checkpoint (``adapt.*`` in the space): adapted once per
        distinct set of adapt settings, into ``DIR/adapted/KEY``, and shared by every later trial with those settings."""
        from filelock import FileLock

        from nlp_transfer.training.adapt import ADAPT_FILE, adapt

        where = self.out / "adapted" / adapt_key(cfg)
        where.parent.mkdir(parents=True, exist_ok=True)
        # two workers wanting the same checkpoint: one adapts, the other waits (the main process of each holds the lock)
        with FileLock(str(where) + ".lock") if self.channel.is_main else contextlib.nullcontext():
            if not self.channel.share((where / ADAPT_FILE).is_file()):
                logger.info(f"continued pretraining for this trial ({_adapt_words(cfg)}) into {where}")
                adapt(cfg.replace(f"output.dir={where}", "output.overwrite=true", "train.resume=null"), progress=self.opts.progress)
            else:
                logger.info(f"continued pretraining ({_adapt_words(cfg)}): reusing {where}")
        if trial is not None:
            trial.set_user_attr("adapted", str(where))
        return cfg.replace(f"model.name_or_path={where}")

    def objective(self, trial):
        import optuna

        values = sample(trial, self.params, self.base_dict)
        trial.set_user_attr("epochs_planned", int(values.get("train.epochs", self.base.train.epochs)))
        logger.info(f"trial {trial.number}: {', '.join(f'{k}={_show(v)}' for k, v in values.items()) or '(the recipe)'}")
        self.channel.share((trial.number, values))
        try:
            result, epochs = self.train(trial.number, values, trial)
        except TrialStop as stop:
            trial.set_user_attr("epochs_run", int(stop.args[0]))
            raise optuna.TrialPruned(f"pruned after epoch {stop.args[0]}") from None
        except Exception as e:  # recorded FAIL (optimize's catch); the search goes on
            msg = " ".join(str(e).split()) or type(e).__name__
            trial.set_user_attr("error", f"{type(e).__name__}: {msg}"[:500])
            logger.warning(f"trial {trial.number} failed: {type(e).__name__}: {msg}")
            raise
        trial.set_user_attr("epochs_run", int(epochs or len(result.history)))
        trial.set_user_attr("best_epoch", int(result.best_epoch))
        trial.set_user_attr("run_dir", str(result.output_dir))
        trial.set_user_attr("seconds", float(result.timing.get("total_seconds") or 0.0))
        trial.set_user_attr("trainable_params", int(result.parameters.get("trainable") or 0))
        value = float(result.validation[self.metric])
        logger.info(f"trial {trial.number}: validation {self.metric} {value:.4f} (best epoch {result.best_epoch})")
        if self.opts.also == "seconds":
            return value, trial.user_attrs["seconds"]
        if self.opts.also == "trainable_params":
            return value, float(trial.user_attrs["trainable_params"])
        return value

    def follow(self) -> None:
        """A process other than the main one: train what the main process shares until it says stop."""
        while True:
            job = self.channel.share(None)
            if job is None:
                return
            try:
                self.train(*job)
            except Exception:  # the main process records the trial; every process failed or stopped alike
                pass


def adapt_key(cfg: RecipeConfig) -> str:
    """What a continued-pretrained checkpoint depends on: the model, the data, the adapt section, the seed and the
    loop settings adapt reads."""
    t = cfg.train
    what = {
        "model": dataclasses.asdict(cfg.model),
        "data": dataclasses.asdict(cfg.data),
        "adapt": dataclasses.asdict(cfg.adapt),
        "train": [t.seed, t.batch_size, t.grad_accum_steps, t.warmup_ratio, t.weight_decay, t.mixed_precision],
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _adapt_words(cfg: RecipeConfig) -> str:
    a = cfg.adapt
    return f"{a.epochs} epoch(s)" + (f", at most {a.max_steps} steps" if a.max_steps else "") + f" on {a.source or 'the recipe texts'}"


def _show(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def counted(study) -> tuple[int, int]:
    """(finished trials that count towards the total, trials running now): a trial failed by its own error counts;
    one failed because its worker died does not (its retry runs instead)."""
    from optuna.trial import TrialState

    done = running = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (t.state == TrialState.FAIL and "error" in t.user_attrs):
            done += 1
        elif t.state == TrialState.RUNNING:
            running += 1
    return done, running


def reap_dead_workers(study) -> int:
    """RUNNING trials whose worker on this machine has exited (a killed search): failed, and their values queued again."""
    from optuna.trial import TrialState

    host, n = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or pid is None or _alive(pid):
            continue
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number}, skip_if_exists=False)
        logger.info(f"trial {t.number}: its worker (pid {pid}) is gone; failed and queued again")
        n += 1
    return n


def stamp_worker(study) -> None:
    """Every trial this worker starts carries its host and pid from the moment it is RUNNING (a new trial is created
    with them in one write; an enqueued one gets them right after this worker takes it), so a kill -9 at any instant leaves
    no RUNNING trial that :func:`reap_dead_workers` cannot attribute."""
    from datetime import datetime

    from optuna.trial import FrozenTrial, TrialState

    storage, me = study._storage, {"host": socket.gethostname(), "pid": os.getpid()}
    create, set_state = storage.create_new_trial, storage.set_trial_state_values

    def create_new_trial(study_id, template_trial=None):
        if template_trial is None:
            template_trial = FrozenTrial(
                number=-1, state=TrialState.RUNNING, value=None, datetime_start=datetime.now(), datetime_complete=None, params={},
                distributions={}, user_attrs=dict(me), system_attrs={}, intermediate_values={}, trial_id=-1,
            )  # fmt: skip
        return create(study_id, template_trial)

    def set_trial_state_values(trial_id, state, values=None):
        taken = set_state(trial_id, state, values)
        if taken and state == TrialState.RUNNING:  # a WAITING (enqueued) trial this worker took
            for k, v in me.items():
                storage.set_trial_user_attr(trial_id, k, v)
        return taken

    storage.create_new_trial, storage.set_trial_state_values = create_new_trial, set_trial_state_values


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def directions(metric: str, also: str | None) -> list[str]:
    first = "minimize" if metric in LOWER_IS_BETTER else "maximize"
    return [first] + (["minimize"] if also else [])


def open_study(base: RecipeConfig, params: list[Param], opts: TuneOptions, metric: str):
    """Create or load the study; a study of another metric, objective or space is refused."""
    import optuna

    storage = open_storage(storage_url(opts))
    name = opts.study or base.name
    dirs = directions(metric, opts.also)
    seed = base.train.seed if opts.seed is None else opts.seed
    sampler = make_sampler(opts.sampler, seed)
    pruner = make_pruner("none" if opts.also else opts.pruner, base.train.epochs)
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=dirs, sampler=sampler, pruner=pruner, load_if_exists=True)
    except ValueError as e:  # another direction than the stored study's
        raise ConfigError(f"study '{name}' exists with other objectives ({e}); choose another --study") from None
    if study.trials:  # a resumed search: a sampler seeded as before would draw the first trials' values again
        study.sampler = make_sampler(opts.sampler, seed + len(study.trials))
    meta = {"metric": metric, "also": opts.also, "space": space_yaml(params)}
    stored = {k: study.user_attrs.get(k) for k in meta}
    if study.user_attrs.get("space") is None:
        for k, v in meta.items():
            study.set_user_attr(k, v)
        study.set_user_attr("recipe", base.to_yaml())
    elif stored != meta:
        what = next(k for k in meta if stored[k] != meta[k])
        raise ConfigError(f"study '{name}' was searched with another {what}; resume it with the same one or choose another --study")
    return study


def tune(base: RecipeConfig, params: list[Param], opts: TuneOptions) -> TuneResult | None:
    """Run the trials missing from the study's total and write the outputs; None on processes other than the main one."""
    import optuna

    from nlp_transfer.data.loading import load_data
    from nlp_transfer.experiments.tune_report import write_outputs

    if opts.trials < 1:
        raise ConfigError(f"--trials {opts.trials}: give the study's total number of trials (at least 1)")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is logged once, by the objective
    channel = Channel()
    data = load_data(base.data, base.model.num_labels)
    metric = data.task_type.selection_metric(base.train.metric_for_best)
    search = Search(base, params, opts, data, metric, channel)
    if not channel.is_main:
        search.follow()
        channel.close()
        return None
    Path(opts.out).mkdir(parents=True, exist_ok=True)
    study = open_study(base, params, opts, metric)
    reap_dead_workers(study)
    stamp_worker(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # RDB: trials whose worker stopped beating (another machine), queued again
    done, running = counted(study)
    todo = max(opts.trials - done - running, 0)
    logger.info(f"study '{study.study_name}': {done} trial(s) finished, {running} running; {todo} to run of {opts.trials}")

    def enough(study, trial) -> None:
        if counted(study)[0] >= opts.trials:
            study.stop()

    try:
        if todo:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.optimize(search.objective, n_trials=todo, timeout=opts.timeout, catch=(Exception,), callbacks=[enough])
    finally:
        channel.share(None)  # the other processes stop
        channel.close()
    result = TuneResult(study, metric, directions(metric, opts.also), storage_url=storage_url(opts))
    write_outputs(result, base, params, opts, data)
    return result
