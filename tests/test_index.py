"""Commands that answer at once: the static index of built-ins, lazy factories, plain first sentences."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import fusionkit
from fusionkit.__main__ import main as cli
from fusionkit.plugins import index
from fusionkit.registry import ComponentSpec, Registry, RegistryError, first_sentence, plain_text

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "timm", "torchvision", "matplotlib", "sklearn")


def test_index_is_up_to_date():
    assert index.render(index.build_entries()) == index.INDEX_FILE.read_text(), \
        "the built-in index is stale: run python -m fusionkit.plugins.index"


def test_a_component_declared_by_user_code_stays_out_of_the_index():
    from fusionkit.registry import _BUILTIN_DECLARATIONS

    @fusionkit.register("user_declared_head", kind="head")
    def build_user_head(*, d_in: int):
        """A head declared outside fusionkit's modules."""

    try:
        assert "user_declared_head" not in {e["name"] for e in index.build_entries()}
        fusionkit.reset_registry()
        assert fusionkit.get_registry().get("user_declared_head").factory is build_user_head
    finally:
        _BUILTIN_DECLARATIONS.remove(("user_declared_head", "head", build_user_head))
        fusionkit.reset_registry()


def test_every_builtin_is_indexed_and_resolves_to_its_declaration():
    from fusionkit.registry import _BUILTIN_DECLARATIONS

    index.build_entries()  # imports every built-in module
    declared = {name: factory for name, _, factory in _BUILTIN_DECLARATIONS}
    fusionkit.reset_registry()
    registry = fusionkit.get_registry()
    for entry in index.load_entries():
        spec = registry.get(entry["name"])
        assert spec.factory is declared[entry["name"]] and spec.kind == entry["kind"]
        assert spec.doc == first_sentence(spec.factory.__doc__)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


def test_list_and_show_import_no_torch_and_no_model():
    proc = _python(
        "import sys\n"
        "from fusionkit.__main__ import main\n"
        "for argv in (['list'], ['list', '--json', '--kind', 'model'], ['list', '--kind', 'dataset'], ['show', 'mhmf'],\n"
        "             ['show', 'gated_fusion']):\n"
        "    assert main(argv) == 0\n"
        f"print(sorted(m for m in {HEAVY!r} + ('baselines', 'recipes', 'fusionkit.components') if m in sys.modules),"
        " file=sys.stderr)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "[]"
    assert "mhmf  (model, plug-in fusionkit)" in proc.stdout


def test_creating_a_small_block_imports_only_torch_and_its_module():
    proc = _python(
        "import sys, fusionkit\n"
        "fusionkit.create('gated_fusion', dim=4)\n"
        f"print(sorted(m for m in {HEAVY!r} + ('baselines', 'recipes', 'fusionkit.slots') if m in sys.modules),"
        " file=sys.stderr)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "['torch']"


def test_list_prints_whole_first_sentences_as_plain_text(capsys):
    assert cli(["list"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":class:" not in out
    rows = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith("name")}
    assert rows["crossmodal_transformer"].endswith(
        "MulT's crossmodal transformer source → target (or, with self_attention=True, its memory transformer).")
    assert rows["iccn"].rstrip().endswith("a DCCA stage, then a regressor.")


def test_list_kind_and_json(capsys):
    assert cli(["list", "--kind", "fusion", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["kind"] for r in rows} == {"fusion"} and "gated_fusion" in [r["name"] for r in rows]
    assert all(set(r) == {"name", "kind", "plugin", "description"} for r in rows)
    assert cli(["list", "--kind", "model", "--json"]) == 0
    models = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert models["mhmf"]["slots"]["fusion"] == "gated_fusion"
    assert cli(["list", "--kind", "blender"]) == 2
    assert "unknown kind 'blender'" in capsys.readouterr().err


def test_show_from_the_index_matches_show_from_the_model(capsys):
    fusionkit.reset_registry()
    assert cli(["show", "tfn"]) == 0 and cli(["show", "subnet"]) == 0
    from_index = capsys.readouterr().out
    registry = fusionkit.get_registry()
    for name in ("tfn", "subnet", *registry.names("model")):
        registry.get(name).factory  # noqa: B018 - load them: show now reads the modules themselves
    assert cli(["show", "tfn"]) == 0 and cli(["show", "subnet"]) == 0
    assert capsys.readouterr().out == from_index
    fusionkit.reset_registry()


@pytest.mark.parametrize("doc, sentence", [
    ("``LSTM(d_in → d)`` on packed sequences: ``(B, T, d)``.\n\nMore.", "LSTM(d_in → d) on packed sequences: (B, T, d)."),
    ("ICCN (Sun et al., 2020): outer products,\n    tied by CCA. Second sentence.", "ICCN (Sun et al., 2020): outer "
                                                                                   "products, tied by CCA."),
    ("Adapter keywords (e.g. as ``mhmf``'s slot). Next.", "Adapter keywords (e.g. as mhmf's slot)."),
    ("Uses :class:`~fusionkit.components.attention.Attention` and :func:`masked_mean`.", "Uses Attention and "
                                                                                        "masked_mean."),
    ("No full stop at all", "No full stop at all"),
    (None, ""),
])
def test_first_sentence(doc, sentence):
    assert first_sentence(doc) == sentence


def test_plain_text_keeps_arithmetic():
    assert plain_text("``a * b`` over *all* steps, 2 * d") == "a * b over all steps, 2 * d"


def test_lazy_spec_imports_on_first_use_only():
    calls = []

    def loader():
        calls.append(1)
        return dict

    registry = Registry()
    registry.add_lazy("thing", loader, kind="head", meta={"doc": "A thing."})
    spec = registry.get("thing")
    assert (spec.doc, spec.loaded, calls) == ("A thing.", False, [])
    assert registry.create("thing", a=1) == {"a": 1} and spec.factory is dict and calls == [1]
    with pytest.raises(RegistryError, match="declared twice"):
        registry.add_lazy("thing", loader, kind="head", meta={})
    with pytest.raises(RegistryError, match="exactly one of factory and loader"):
        ComponentSpec("x", "head")
