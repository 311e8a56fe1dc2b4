"""The built wheel, installed on its own: `nlp-transfer` from a folder outside the checkout lists the shipped
recipes, trains one by name on real MiniLM and a Rotten Tomatoes slice, and predicts with the run.

The fresh virtual environment has no editable install and no checkout on sys.path; it reuses the installed
dependencies through a .pth line naming this environment's site-packages (a path in a .pth file is added to
sys.path, but the .pth files inside it, the editable finder among them, are not run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (the build leaves nothing in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("nlp_transfer", "recipes"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)], src, dict(os.environ))
    (path,) = out.glob("nlp_transfer-*.whl")
    return path


def test_the_wheel_carries_the_recipes_and_the_command(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.removeprefix("nlp_transfer/_recipes/") for n in names if n.startswith("nlp_transfer/_recipes/")}
    in_checkout = {p.relative_to(REPO / "recipes").as_posix() for p in (REPO / "recipes").rglob("*.yaml")}
    assert shipped == in_checkout and "accelerate/cpu.yaml" in shipped
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "nlp-transfer = nlp_transfer.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "nlp_transfer/__main__.py" in names
    assert "nlp_transfer/inference/static/index.html" in names  # the page nlp-transfer serve answers at /


def test_installed_wheel_lists_trains_by_name_and_predicts(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, dict(os.environ))
    python = venv / "bin" / "python"
    # The wheel first, while the new environment sees no other nlp-transfer (pip then touches nothing outside it).
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        tmp_path,
        dict(os.environ),
    )
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path, {}).stdout.strip())
    (site / "_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NLP_TRANSFER_TRACEBACK")}
    env.update(HF_HUB_OFFLINE="1", NLP_TRANSFER_CACHE=str(tmp_path / "cache"), TOKENIZERS_PARALLELISM="false")
    where = _run(
        [str(python), "-c", "import nlp_transfer, sys; print(nlp_transfer.__file__); print(*sys.path, sep='\\n')"], work, env
    ).stdout
    assert where.splitlines()[0].startswith(str(site)), where  # the installed copy, not the checkout
    # no checkout on sys.path (the reused dependencies may live in a virtual environment inside it)
    venvs = [Path(sysconfig.get_path("purelib")).resolve(), Path(sys.prefix).resolve()]
    on_path = [Path(p).resolve() for p in where.splitlines()[1:] if p]
    assert not [p for p in on_path if p.is_relative_to(REPO) and not any(p.is_relative_to(v) for v in venvs)], where

    command = str(venv / "bin" / "nlp-transfer")
    listing = _run([command, "recipes"], work, env).stdout
    assert any(
        line.split()[:4] == ["rotten_tomatoes/minilm-logreg", "rotten_tomatoes", "minilm", "logreg"] for line in listing.splitlines()
    )
    cpu = Path(_run([command, "recipes", "--accelerate", "cpu"], work, env).stdout.strip())
    assert cpu.is_file() and cpu.is_relative_to(site)

    train = _run(
        [command, "train", "--config", "rotten_tomatoes/minilm-logreg", "data.max_samples=200", "output.dir=run", "--no-progress"],
        work,
        env,
    )
    assert "rt-minilm-logreg: test accuracy" in train.stdout
    run = work / "run"
    assert (run / "metrics.json").is_file() and (run / "recipe.yaml").is_file()

    texts = work / "texts.txt"
    texts.write_text("a gorgeous, moving film\nthe dullest, most tedious two hours of my life\n")
    predicted = _run([command, "predict", "run", str(texts), "--no-progress"], work, env).stdout.splitlines()
    assert predicted[0].startswith("text,label") and [line.split(",")[-4] for line in predicted[1:]] == ["fresh", "rotten"]

    # the run's model card, read by the installed huggingface_hub: its model-index holds the run's test metrics
    probe = "import json; from huggingface_hub import ModelCard; print(json.dumps(ModelCard.load('run/README.md').data.to_dict()))"
    card = json.loads(_run([str(python), "-c", probe], work, env).stdout)
    assert card["pipeline_tag"] == "text-classification" and card["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    results = {m["type"]: m["value"] for m in card["model-index"][0]["results"][0]["metrics"]}
    assert results["accuracy"] == pytest.approx(json.loads((run / "metrics.json").read_text())["test"]["accuracy"])
