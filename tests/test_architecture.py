"""The house plan, checked: which way imports run inside fusionkit, and how the built-in models are found.

* ``fusionkit/`` never imports the packages above it (``baselines``, ``recipes``, ``benchmarks``), neither with an
  import statement (at module level or inside a function) nor by a module name given to ``importlib``.
* The import graph of ``fusionkit``'s modules has no cycle through the slots and the training code: the slots and
  the building code sit below ``fusionkit.training`` and never reach it.
* fusionkit's own models are registered through the entry points of its distribution (group ``fusionkit``),
  the same way as a plug-in's.
"""
from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import pytest

import fusionkit
from fusionkit.plugins import manager

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fusionkit"
UPPER = ("baselines", "recipes", "benchmarks")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for every import in the file: statements anywhere, relative ones resolved, and string
    arguments of ``importlib.import_module`` / ``__import__``; ``from a import b`` yields ``a`` and ``a.b``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def _fusionkit_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_scan_finds_every_kind_of_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import baselines.tfn\nfrom recipes import mhmf_bert\n"
                     "def f():\n    import importlib\n    importlib.import_module('benchmarks.run')\n"
                     "    __import__('baselines')\n")
    names = [m for _, m in _imports(probe)]
    assert {"baselines.tfn", "recipes", "benchmarks.run", "baselines"} <= set(names)


def test_fusionkit_never_imports_the_packages_above_it():
    offending = [f"{path.relative_to(ROOT)}:{line} imports {module}"
                 for path in _fusionkit_files() for line, module in _imports(path)
                 if module.split(".")[0] in UPPER]
    assert not offending, "\n".join(offending)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in _fusionkit_files()}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for _, module in _imports(path):
            # the longest known module the import names (``from fusionkit.x import y``: a module y or a name in x)
            while module and module not in modules:
                module = module.rpartition(".")[0]
            # a module's own parent packages run before it anyway (``from pkg import sibling``): not an edge
            if module and module != name and not name.startswith(module + "."):
                targets.add(module)
        graph[name] = targets
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize("low", ["fusionkit.registry", "fusionkit.build", "fusionkit.slots", "fusionkit.text_model"])
def test_the_building_code_and_the_slots_never_reach_training(low):
    graph = _graph()
    assert low in graph
    reached = sorted(m for m in _reachable(graph, low) if m.startswith("fusionkit.training"))
    assert not reached, f"{low} reaches {reached}"


def test_no_import_cycle_between_slots_and_training():
    graph = _graph()
    assert "fusionkit.slots" in _reachable(graph, "fusionkit.training.build")  # the graph sees the real edge
    cycles = [m for m in graph if m.startswith(("fusionkit.slots", "fusionkit.build", "fusionkit.training"))
              and m in _reachable(graph, m)]
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_builtin_models_come_from_the_distribution_entry_points():
    eps = {ep.name: ep.value for ep in importlib.metadata.distribution("fusionkit").entry_points
           if ep.group == "fusionkit"}
    assert eps == {"baselines": "baselines", "recipes": "recipes"}
    registry = fusionkit.get_registry()
    models = registry.names("model")
    assert {"mhmf", "tfn", "lmf", "mult", "misa", "mag", "iccn", "text"} <= set(models)
    assert all(registry.get(m).plugin == "fusionkit" for m in models)
    # the third-party lookup leaves fusionkit's own entry points out (no name clash with the built-in plug-in)
    assert not [ep for ep in manager._entry_points() if ep.name in eps and ep.value in eps.values()]


def test_disabling_every_plugin_keeps_the_builtin_models(monkeypatch):
    monkeypatch.setenv("FUSIONKIT_DISABLE_PLUGINS", "*")
    fusionkit.reset_registry()
    try:
        assert {"mhmf", "text", "restitution"} <= set(fusionkit.list_components())
    finally:
        monkeypatch.delenv("FUSIONKIT_DISABLE_PLUGINS")
        fusionkit.reset_registry()


def test_every_model_factory_takes_the_shared_text_model_arguments():
    import inspect
    import typing

    from fusionkit.encoders.bert import ENCODER_MODES
    from fusionkit.text_model import FIELDS, TextModelArgs

    assert typing.get_args(typing.get_type_hints(TextModelArgs)["encoder_mode"]) == ENCODER_MODES
    for name in fusionkit.list_components("model"):
        params = inspect.signature(fusionkit.get_registry().get(name).factory).parameters
        assert set(FIELDS) <= set(params), name
        assert all(params[f].kind is inspect.Parameter.KEYWORD_ONLY for f in FIELDS), name


def test_a_factory_may_give_a_shared_argument_its_own_default():
    import inspect

    from fusionkit.text_model import TextModelArgs, text_model_factory

    @text_model_factory(encoder_mode="frozen")
    def build(text: TextModelArgs, *, width: int = 2):
        return text, width

    assert inspect.signature(build).parameters["encoder_mode"].default == "frozen"
    assert build()[0].encoder_mode == "frozen"
    assert build(encoder_mode="finetune", width=3) == (TextModelArgs(encoder_mode="finetune"), 3)
    with pytest.raises(TypeError, match="not a field of TextModelArgs"):
        text_model_factory(encoder_moed="frozen")(lambda text: text)
    # iccn's authors read a precomputed (frozen) text vector; every other built-in model fine-tunes by default
    params = inspect.signature(fusionkit.get_registry().get("iccn").factory).parameters
    assert params["encoder_mode"].default == "frozen"
