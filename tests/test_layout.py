"""The shape of the package: layers import only downward, no cycles, short functions, a lazy public face."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "nlp_transfer"


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, function-local imports included (grimp reads every import)."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("nlp_transfer")
    modules = {m for m in graph.modules if m.startswith("nlp_transfer")}
    # The package root is the public face (lazy re-exports): what it names is not a dependency of the layers.
    return {m: {t for t in graph.find_modules_directly_imported_by(m) if t in modules and t != "nlp_transfer"} for m in modules}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_function_local_imports_included():
    graph = _import_graph()
    assert len(graph) > 40  # the whole package was read
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layer_contract_names_every_subpackage():
    """pyproject's import-linter contract (run by `make test`) covers every top-level module of the package."""
    import tomllib

    contract = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    layers = {name for layer in contract["layers"] for name in layer.split(" | ")}
    top = {
        f"nlp_transfer.{p.stem if p.is_file() else p.name}"
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and (p / "__init__.py").is_file())
    }
    assert top == layers


def test_no_function_over_100_lines():
    long = []
    for f in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 100:
                long.append(f"{f.relative_to(REPO)}:{node.lineno} {node.name}")
    assert long == []


def _imports_after(code: str) -> set[str]:
    """Heavy libraries imported by running ``code`` in a fresh interpreter."""
    probe = code + "\nimport sys\nprint(' '.join(m for m in ('torch', 'datasets', 'accelerate', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    return set(out.stdout.split())


def test_import_and_recipe_errors_import_no_torch():
    assert _imports_after("import nlp_transfer; nlp_transfer.RecipeConfig; nlp_transfer.ConfigError") == set()
    bad = (
        "from nlp_transfer import RecipeConfig, ConfigError\n"
        "try:\n    RecipeConfig.from_yaml('recipes/rotten_tomatoes/minilm-full.yaml', ['train.lrr=1'])\n"
        "except ConfigError as e:\n    assert 'train.lr' in str(e)\nelse:\n    raise SystemExit('no error')"
    )
    assert _imports_after(bad) == set()


def test_train_help_and_a_bad_override_import_no_torch(tmp_path):
    """`scripts/train.py --help` and a recipe error return before torch is imported (-X importtime lists every import)."""
    for args, code in ((["--help"], 0), (["--config", "recipes/rotten_tomatoes/minilm-full.yaml", "train.lrr=1"], 2)):
        proc = subprocess.run([sys.executable, "-X", "importtime", "scripts/train.py", *args], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == code, proc.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
        assert "nlp_transfer.config" in imported
        assert not imported & {"torch", "datasets", "accelerate", "transformers"}


def test_lazy_names_resolve_to_their_modules():
    import nlp_transfer

    for name in nlp_transfer.__all__:
        assert getattr(nlp_transfer, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        nlp_transfer.nope  # noqa: B018
