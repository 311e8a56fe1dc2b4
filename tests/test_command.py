"""The `nlp-transfer` command: dispatch, help without torch, shipped recipes by name, `recipes` list/copy,
the one-line message of a missing extra, and the package layout the wheel is built from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
import yaml
from conftest import REPO, toy_rows, write_csv

from nlp_transfer import RecipeConfig
from nlp_transfer.cli.main import COMMANDS, main
from nlp_transfer.config import shipped
from nlp_transfer.errors import ConfigError, DataError
from nlp_transfer.utils.extras import EXTRAS, extra_hint, missing_modules, require_extra

HEAVY = {"torch", "transformers", "datasets", "accelerate", "sklearn"}


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **extra}
    env.pop("NLP_TRANSFER_TRACEBACK", None)
    return env


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


# ---- dispatch and help ----------------------------------------------------------------------------------------
def test_help_lists_every_command_and_imports_none_of_them(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "nlp_transfer", "--help"], capture_output=True, text=True, cwd=tmp_path, env=_env()
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ") and line.split()}
    assert listed == set(COMMANDS)
    for name, (_, description) in COMMANDS.items():
        assert f"  {name}" in proc.stdout and description in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & HEAVY, imported & HEAVY
    assert not {m for m in imported if m.startswith("nlp_transfer.cli.") and m != "nlp_transfer.cli.main"}, "subcommands imported"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_help_is_its_own_under_the_command_name(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: nlp-transfer {name} "), out[:200]
    assert "scripts/" not in out.split("\n\n")[0]  # the usage line names the command, not a script


def test_version_and_unknown_command(capsys):
    from nlp_transfer import __version__

    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"nlp-transfer {__version__}"
    assert main(["trian", "--config", "x"]) == 2
    err = capsys.readouterr().err
    assert _errors(err) == [err.strip()] and "did you mean 'train'" in err
    assert main([]) == 2 and "commands:" in capsys.readouterr().out


def test_commands_run_through_run_cli_one_error_line_or_the_traceback(capsys):
    assert main(["train", "--config", "rotten_tomatoes/minilm-ful"]) == 2
    err = capsys.readouterr().err
    assert len(_errors(err)) == 1 and "Traceback" not in err
    assert "rotten_tomatoes/minilm-full" in _errors(err)[0]  # the nearest shipped name
    with pytest.raises(ConfigError):
        main(["--traceback", "train", "--config", "rotten_tomatoes/minilm-ful"])
    with pytest.raises(ConfigError):
        main(["train", "--config", "rotten_tomatoes/minilm-ful", "--traceback"])


def test_python_m_and_the_scripts_work_from_another_folder(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "nlp_transfer", "recipes", "--path", "rotten_tomatoes/minilm-full"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == shipped.shipped_dir() / "rotten_tomatoes" / "minilm-full.yaml"
    script = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), "--config", "bbc_news/minilm-logreg", "--print-config", "train.seed=7"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
    )
    assert script.returncode == 0, script.stderr
    printed = yaml.safe_load(script.stdout)
    assert printed["name"] == "bbc-minilm-logreg" and printed["train"]["seed"] == 7


def test_accelerate_launch_runs_the_module_with_a_shipped_config(tmp_path):
    """`accelerate launch --config_file $(nlp-transfer recipes --accelerate cpu) -m nlp_transfer train ...` from any folder."""
    config = subprocess.run(
        [sys.executable, "-m", "nlp_transfer", "recipes", "--accelerate", "cpu"], capture_output=True, text=True, cwd=tmp_path, env=_env()
    ).stdout.strip()
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "-q", "--config_file", config, "-m", "nlp_transfer", "train"]
    proc = subprocess.run(
        [*cmd, "--config", "rotten_tomatoes/minilm-lora", "--print-config", "train.epochs=2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = yaml.safe_load(proc.stdout)
    assert printed["name"] == "rt-minilm-lora" and printed["train"]["epochs"] == 2


_THREADS_SCRIPT = """
import sys
from nlp_transfer.cli.common import run_cli


def main(argv):
    import torch

    from nlp_transfer.training.precision import set_threads

    seen = [torch.get_num_threads()]  # a command that picks no count of its own
    set_threads(None)  # training without train.num_threads
    seen.append(torch.get_num_threads())
    set_threads(2)  # the recipe's train.num_threads wins
    print(seen + [torch.get_num_threads()])


sys.exit(run_cli(main, []))
"""


@pytest.mark.parametrize("value, code, out", [("1", 0, "[1, 1, 2]"), ("many", 2, "")])
def test_nlp_transfer_num_threads_sets_every_commands_threads(value, code, out):
    """$NLP_TRANSFER_NUM_THREADS: the threads of a command's torch and of training without train.num_threads (the
    recipe's own count wins); a value that is not a positive number is one error line and exit code 2."""
    env = _env(NLP_TRANSFER_NUM_THREADS=value)
    env.pop("OMP_NUM_THREADS", None)
    proc = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert (proc.returncode, proc.stdout.strip()) == (code, out), proc.stderr
    if code:
        assert _errors(proc.stderr) == [
            "error: NLP_TRANSFER_NUM_THREADS='many' is not a positive number of threads; set it to 1, 2, ... or unset it"
        ]


# ---- shipped recipes by name ------------------------------------------------------------------------------------
def test_every_shipped_recipe_loads_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = shipped.recipe_names()
    assert len(names) >= 30 and "rotten_tomatoes/minilm-full" in names and not any(n.startswith("accelerate/") for n in names)
    for name in names:
        cfg = RecipeConfig.from_yaml(name)
        assert cfg.name, name
    same = [
        RecipeConfig.from_yaml(x)
        for x in ("rotten_tomatoes/minilm-full", "rotten_tomatoes/minilm-full.yaml", "recipes/rotten_tomatoes/minilm-full.yaml")
    ]
    assert same[0] == same[1] == same[2]


def test_an_existing_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "rotten_tomatoes" / "minilm-full.yaml"
    local.parent.mkdir()
    local.write_text(yaml.safe_dump({"name": "my-local-recipe", "data": {"source": "rotten_tomatoes"}}))
    assert RecipeConfig.from_yaml("rotten_tomatoes/minilm-full.yaml").name == "my-local-recipe"
    assert RecipeConfig.from_yaml("rotten_tomatoes/minilm-full").name == "rt-minilm-full"  # no such file: the shipped one


def test_an_unknown_name_is_one_line_with_the_nearest_names():
    with pytest.raises(ConfigError) as e:
        RecipeConfig.from_yaml("tweet_sentiment/minilm-logreg-balance")
    message = str(e.value)
    assert "\n" not in message and "does not exist" in message
    assert "tweet_sentiment/minilm-logreg-balanced" in message.split("nearest:")[1]
    with pytest.raises(ConfigError, match="nearest: .*rotten_tomatoes/minilm-lora"):
        shipped.resolve_recipe("minilm-lorra")  # the dataset left out: matched on the recipe's own name


def test_recipes_that_name_other_recipes_resolve_from_any_folder(tmp_path, monkeypatch):
    """adapt.source and transfer.domain_adversarial.target name recipes by their repository path; they resolve to
    the shipped files from any working directory (as from an installed wheel)."""
    monkeypatch.chdir(tmp_path)
    refs = []
    for name in shipped.recipe_names():
        raw = yaml.safe_load(shipped.resolve_recipe(name).read_text())
        refs += [(raw.get("adapt") or {}).get("source"), ((raw.get("transfer") or {}).get("domain_adversarial") or {}).get("target")]
    refs = [r for r in refs if r and str(r).endswith(".yaml")]
    assert refs, "the shipped recipes refer to other recipes (adapt.source, domain_adversarial.target)"
    for ref in refs:
        assert shipped.find_recipe(ref) is not None and shipped.find_recipe(ref).is_relative_to(shipped.shipped_dir()), ref


def test_unlabelled_text_from_a_recipe_named_without_its_file(tmp_path, monkeypatch):
    """adapt.source / domain_adversarial.target: a shipped name (no .yaml) reads that recipe's training texts."""
    from nlp_transfer.data.loading import unlabelled_texts

    rows = toy_rows(60)
    csv = write_csv(tmp_path / "toy.csv", rows)
    root = tmp_path / "shipped"
    (root / "toy").mkdir(parents=True)
    (root / "toy" / "rec.yaml").write_text(yaml.safe_dump({"name": "toy", "data": {"source": None, "train_file": str(csv)}}))
    monkeypatch.setattr(shipped, "shipped_dir", lambda: root)
    monkeypatch.chdir(tmp_path)
    cfg = RecipeConfig.from_dict({"data": {"source": None, "train_file": str(csv)}})
    for source in ("toy/rec", "toy/rec.yaml", "recipes/toy/rec.yaml"):
        train, held_out, what = unlabelled_texts(cfg.data, source, "text", 0.1, 0, "adapt")
        assert "recipe" in what and len(train) + len(held_out) < len(rows)  # its training split only, not the whole file
        assert set(train) <= {t for t, _ in rows}
    with pytest.raises(DataError, match=r"recipe 'toy/re\.yaml' does not exist.*toy/rec"):
        unlabelled_texts(cfg.data, "toy/re.yaml", "text", 0.1, 0, "adapt")


def test_compare_takes_names_for_recipes_and_target(tmp_path, monkeypatch):
    from nlp_transfer.experiments.compare import DEFAULT_RECIPES, load_recipes

    monkeypatch.chdir(tmp_path)
    cfgs = load_recipes([*DEFAULT_RECIPES[:2], "recipes/rotten_tomatoes/minilm-full.yaml"], ["data.max_samples=10"])
    assert [c.name for c in cfgs] == ["rt-minilm-scratch", "rt-minilm-feature_extraction", "rt-minilm-full"]
    assert all(c.data.max_samples == 10 for c in cfgs)


# ---- nlp-transfer recipes ---------------------------------------------------------------------------------------
def test_recipes_lists_one_line_each(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = shipped.recipe_names()
    assert [line.split()[0] for line in lines] == names
    row = next(line for line in lines if line.startswith("rotten_tomatoes/minilm-lora "))
    assert row.split()[1:4] == ["rotten_tomatoes", "minilm", "lora"] and "LoRA" in row
    row = next(line for line in lines if line.startswith("rotten_tomatoes/minilm-logreg "))
    assert "logreg" in row.split() and "logistic regression" in row
    assert main(["recipes", "bbc_news", "chunks"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == [n for n in names if "bbc_news" in n and "chunks" in n]


def test_recipes_copy_writes_a_copy_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    src = shipped.resolve_recipe("rotten_tomatoes/minilm-full")
    assert main(["recipes", "copy", "rotten_tomatoes/minilm-full", "mine.yaml"]) == 0
    assert (tmp_path / "mine.yaml").read_bytes() == src.read_bytes()
    assert RecipeConfig.from_yaml("mine.yaml", ["train.epochs=1"]).train.epochs == 1
    (tmp_path / "mine.yaml").write_text("# my edits\n")
    capsys.readouterr()
    assert main(["recipes", "copy", "rotten_tomatoes/minilm-full", "mine.yaml"]) == 2
    err = capsys.readouterr().err
    assert len(_errors(err)) == 1 and "--force" in err
    assert (tmp_path / "mine.yaml").read_text() == "# my edits\n"  # kept
    assert main(["recipes", "copy", "rotten_tomatoes/minilm-full", "mine.yaml", "--force"]) == 0
    assert (tmp_path / "mine.yaml").read_bytes() == src.read_bytes()
    (tmp_path / "edits").mkdir()
    assert main(["recipes", "copy", "bbc_news/minilm-lora.yaml", "edits"]) == 0
    assert (tmp_path / "edits" / "minilm-lora.yaml").is_file()
    capsys.readouterr()
    assert main(["recipes", "copy", "bbc_news/minilm-lorra", "x.yaml"]) == 2
    assert "bbc_news/minilm-lora" in capsys.readouterr().err and not (tmp_path / "x.yaml").exists()


def test_recipes_accelerate_gives_the_config_paths(capsys):
    assert main(["recipes", "--accelerate"]) == 0
    listed = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert {"cpu", "multi-gpu", "fsdp"} <= set(listed)
    assert main(["recipes", "--accelerate", "cpu"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == Path(listed["cpu"]) and yaml.safe_load(path.read_text())["num_processes"] == 1
    assert main(["recipes", "--accelerate", "multi-gpus"]) == 2
    assert "multi-gpu" in _errors(capsys.readouterr().err)[0]


# ---- missing extras -----------------------------------------------------------------------------------------------
def test_extras_match_pyproject_and_a_missing_module_is_named():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(extras)
    assert missing_modules(["json", "no_such_module_here"]) == ["no_such_module_here"]
    assert (
        extra_hint("serve", "nlp-transfer serve", ["uvicorn"])
        == "nlp-transfer serve needs uvicorn (not installed): pip install 'nlp-transfer[serve]'"
    )


@pytest.mark.parametrize(
    "argv, module, extra",
    [
        (["serve", "RUN"], "uvicorn", "serve"),
        (["export", "RUN", "OUT", "--onnx"], "onnxruntime", "onnx"),
        (["select", "--data", "rotten_tomatoes", "--candidates", "minilm", "--out", "OUT"], "transformer_ranker", "select"),
        (["label-issues", "--config", "rotten_tomatoes/minilm-logreg"], "cleanlab", "trust"),
        (["train", "--config", "rotten_tomatoes/minilm-setfit"], "setfit", "fewshot"),
        (["tune", "--config", "rotten_tomatoes/minilm-logreg", "--trials", "1", "--out", "OUT"], "optuna", "tune"),
    ],
)
def test_a_missing_extra_is_one_line_naming_its_pip_install(argv, module, extra, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert _errors(err) == [err.strip()], err
    assert module in err and f"pip install 'nlp-transfer[{extra}]'" in err
    assert not (tmp_path / "OUT").exists()


def test_library_paths_raise_the_same_message(monkeypatch):
    from nlp_transfer.errors import ModelError
    from nlp_transfer.inference.onnx import require_onnxruntime
    from nlp_transfer.transfer.estimators import _library

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ModelError, match=r"needs onnxruntime \(not installed\): pip install 'nlp-transfer\[onnx\]'"):
        require_onnxruntime()
    monkeypatch.setitem(sys.modules, "transformer_ranker", None)
    with pytest.raises(ConfigError, match=r"pip install 'nlp-transfer\[select\]'"):
        _library()
    from nlp_transfer.inference.label_issues import rank_label_issues

    monkeypatch.setitem(sys.modules, "cleanlab", None)
    with pytest.raises(DataError, match=r"label issues needs cleanlab \(not installed\): pip install 'nlp-transfer\[trust\]'"):
        rank_label_issues(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]), ["a", "b"], ["x", "y"])
    with pytest.raises(ConfigError, match=r"needs no_such_module_here \(not installed\)"):
        require_extra("trust", "something", ConfigError, ("json", "no_such_module_here"))


def test_a_core_install_trains_predicts_and_evaluates(tmp_path, tiny_bert_dir):
    """Every optional module made unimportable: train, predict and evaluate still work. matplotlib stays: torchmetrics
    imports it when its metadata says it is installed, which a module hidden in sys.modules cannot change (without
    matplotlib the plots are left out with a warning: tests/test_report.py)."""
    csv = write_csv(tmp_path / "toy.csv", toy_rows(80))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "core",
                "model": {"name_or_path": str(tiny_bert_dir), "max_length": 32},
                "data": {"source": None, "train_file": str(csv)},
                "train": {"epochs": 1, "batch_size": 16, "mixed_precision": "no", "num_threads": 1},
                "output": {"dir": str(tmp_path / "run")},
            }
        )
    )
    blocked = sorted(({m for modules in EXTRAS.values() for m in modules} | {"sentence_transformers"}) - {"matplotlib"})
    code = (
        f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
        "from nlp_transfer.cli.main import main\n"
        f"assert main(['train', '--config', {str(recipe)!r}, '--no-progress']) == 0\n"
        f"assert main(['predict', {str(tmp_path / 'run')!r}, {str(csv)!r}, '-o', {str(tmp_path / 'p.csv')!r}, '--no-progress']) == 0\n"
        f"assert main(['evaluate', {str(tmp_path / 'run')!r}, {str(csv)!r}, '--no-progress', '--show', '0', '--out', 'ev']) == 0\n"
        f"assert main(['evaluate', {str(tmp_path / 'run')!r}, '--explain', '3', '--out', 'ev2']) == 2\n"
        f"bad = [m for m in {blocked!r} if sys.modules.get(m) is not None]\nassert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").is_file() and len((tmp_path / "p.csv").read_text().splitlines()) == 81
    assert (tmp_path / "ev" / "metrics.json").is_file() and not (tmp_path / "ev" / "explanations.html").exists()
    assert (
        "note: no explanations.html: explaining predictions needs captum (not installed): pip install 'nlp-transfer[trust]'" in proc.stderr
    )
    assert _errors(proc.stderr) == [
        "error: nlp-transfer evaluate --explain needs captum (not installed): pip install 'nlp-transfer[trust]'"
    ]
    assert not (tmp_path / "ev2").exists()


# ---- the package layout the wheel is built from ------------------------------------------------------------------------
def test_pyproject_lists_every_package_and_ships_the_recipes():
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "nlp_transfer").rglob("__init__.py")}
    recipes = {"nlp_transfer._recipes"} | {f"nlp_transfer._recipes.{d.name}" for d in (REPO / "recipes").iterdir() if d.is_dir()}
    data_only = {"nlp_transfer.inference.static"}  # the served page
    assert set(tool["packages"]) == on_disk | recipes | data_only
    assert tool["package-data"]["nlp_transfer.inference.static"] == ["*.html"]
    assert tool["package-dir"] == {"nlp_transfer._recipes": "recipes"}
    assert all(tool["package-data"].get(p) == ["*.yaml"] for p in recipes)
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"nlp-transfer": "nlp_transfer.cli.main:main"}


def test_a_closed_pipe_ends_the_listing_quietly():
    """`nlp-transfer recipes | head`: the reader may close the pipe before the listing is written (here `true`
    reads nothing at all); the command stops with exit code 1 and no traceback."""
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{sys.executable} -m nlp_transfer recipes | true"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
