"""The shape of the package: layers import only downward, no cycles, short functions, a lazy public face."""

from __future__ import annotations

import ast
import re
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


# ---- docstrings: every dotted nlp_transfer name resolves; the public API in Google style -------------------
DOTTED = re.compile(r"(?<![\w/.-])nlp_transfer(?:\.[A-Za-z_]\w*)+")
NOT_NAMES = {"nlp_transfer.json"}  # the run manifest's file name


def _module_file(parts: list[str]) -> Path | None:
    base = REPO.joinpath(*parts)
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


def _defined(tree: ast.Module) -> dict[str, ast.AST | None]:
    """Names a module defines or imports at top level (TYPE_CHECKING blocks included): name -> its class node."""
    names: dict[str, ast.AST | None] = {}
    for node in [n for top in tree.body for n in ([top, *top.body] if isinstance(top, ast.If) else [top])]:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node if isinstance(node, ast.ClassDef) else None
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update({n.id: None for n in ast.walk(target) if isinstance(n, ast.Name)})
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update({(a.asname or a.name).split(".")[0]: None for a in node.names})
    return names


def _resolves(name: str) -> bool:
    """A dotted name: the longest prefix that is a module of the package, then a name it defines (and a
    member of that class, if one more part follows)."""
    import nlp_transfer

    parts = name.split(".")
    i = next((i for i in range(len(parts), 0, -1) if _module_file(parts[:i])), 0)
    if i == 0:
        return False
    rest = parts[i:]
    if not rest:
        return True
    names = _defined(ast.parse(_module_file(parts[:i]).read_text()))
    if parts[:i] == ["nlp_transfer"]:
        names.update(dict.fromkeys([*nlp_transfer._EXPORTS, *nlp_transfer._MODULES]))
    if rest[0] not in names:
        return False
    cls = names[rest[0]]
    if len(rest) > 1 and isinstance(cls, ast.ClassDef):
        return rest[1] in _defined(ast.Module(body=cls.body, type_ignores=[]))
    return True


def test_the_name_check_catches_stale_modules():
    assert _resolves("nlp_transfer.inference.predictor.Predictor.predict") and _resolves("nlp_transfer.data.chunking")
    assert _resolves("nlp_transfer.load_run") and _resolves("nlp_transfer.tasks.Predictions")
    for stale in ("nlp_transfer.evaluation", "nlp_transfer.modeling.TextClassifier", "nlp_transfer.chunking.LongTextSpec"):
        assert not _resolves(stale), stale
    assert not _resolves("nlp_transfer.inference.predictor.Predictor.no_such_method")


def test_every_dotted_name_in_the_sources_resolves():
    """Docstrings and comments of the package, scripts and recipes name modules, classes and functions that exist."""
    files = [*PACKAGE.rglob("*.py"), *(REPO / "scripts").glob("*.py"), *(REPO / "recipes").rglob("*.yaml")]
    stale = [
        f"{f.relative_to(REPO)}:{n}: {m}"
        for f in files
        for n, line in enumerate(f.read_text().splitlines(), 1)
        for m in DOTTED.findall(line)
        if m not in NOT_NAMES and not _resolves(m)
    ]
    assert not stale, "names that no longer exist:\n" + "\n".join(stale)


# The API reference is generated from these docstrings (mkdocstrings, Google style).
API_DOCS = {
    "training.trainer.train": {"parameters", "returns", "examples"},
    "training.trainer.RunResult": {"attributes", "examples"},
    "inference.predictor.load_run": {"parameters", "returns", "raises", "examples"},
    "inference.predictor.Predictor": {"parameters", "examples"},
    "inference.predictor.Predictor.predict": {"parameters", "returns", "examples"},
    "inference.predictor.Predictor.predict_proba": {"parameters", "returns", "examples"},
    "inference.predictor.Predictor.logits": {"parameters", "returns", "examples"},
    "inference.predictor.Predictor.evaluate": {"parameters", "returns", "examples"},
    "inference.predictor.Predictor.explain": {"parameters", "returns", "examples"},
    "config.schema.RecipeConfig": {"examples"},
    "config.schema.RecipeConfig.from_yaml": {"parameters", "returns", "raises", "examples"},
    "config.schema.RecipeConfig.from_dict": {"parameters", "returns", "raises", "examples"},
    "config.schema.RecipeConfig.to_dict": {"returns", "examples"},
    "config.schema.RecipeConfig.to_yaml": {"returns", "examples"},
    "config.schema.RecipeConfig.replace": {"parameters", "returns", "raises", "examples"},
    "tasks.single_label.Predictions": {"parameters", "examples"},
}


def test_the_public_api_docstrings_parse_as_google_style(caplog):
    griffe = pytest.importorskip("griffe")
    package = griffe.load("nlp_transfer", search_paths=[str(REPO)], allow_inspection=False)
    for path, wanted in API_DOCS.items():
        caplog.clear()
        sections = {s.kind.value for s in package[path].docstring.parse("google")}
        assert wanted <= sections, f"{path}: missing {sorted(wanted - sections)}"
        assert not [r for r in caplog.records if r.name.startswith("griffe")], f"{path}: {caplog.text}"


def test_the_top_level_api_names_collide_with_nothing_and_export_every_recipe_section():
    import dataclasses

    import nlp_transfer
    from nlp_transfer.config import schema

    scripts = {p.stem for p in (REPO / "scripts").glob("*.py")}
    predictor_methods = {n for n in dir(nlp_transfer.Predictor) if not n.startswith("_")}
    libraries = {"evaluate", "datasets", "transformers", "accelerate", "peft", "setfit", "torch", "onnx", "captum"}
    # `train` is what scripts/train.py runs: the same operation under the same name, not a clash.
    assert not set(nlp_transfer.__all__) & (scripts - {"train"} | predictor_methods | libraries)
    import nlp_transfer.training

    assert "evaluate" not in dir(nlp_transfer) and not hasattr(nlp_transfer.training, "evaluate")
    sections = {name for name, obj in vars(schema).items() if dataclasses.is_dataclass(obj) and obj.__module__ == schema.__name__}
    assert sections <= set(nlp_transfer.__all__), sorted(sections - set(nlp_transfer.__all__))
