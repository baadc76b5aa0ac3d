"""Registry and plug-in discovery: create/list, close-match errors, entry points, blocking, name clashes."""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap

import pytest
import torch
from readme_snippets import snippet

import fusionkit
from fusionkit.plugins.manager import PluginLoadError
from fusionkit.registry import KINDS, Registry, RegistryError

CORE_NAMES = {
    "self_attention_adapter": "adapter",
    "cross_attention_adapter": "adapter",
    "gru_memory": "memory",
    "restitution": "fusion",
    "restitution_loss": "loss",
    "gated_fusion": "fusion",
    "bert_encoder": "encoder",
    "mhmf": "model",
    "text": "model",
}


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    monkeypatch.delenv("FUSIONKIT_DISABLE_PLUGINS", raising=False)
    fusionkit.reset_registry()
    yield
    fusionkit.reset_registry()


def test_core_components_registered_under_their_names():
    registry = fusionkit.get_registry()
    for name, kind in CORE_NAMES.items():
        assert registry.get(name).kind == kind, name
        assert registry.get(name).plugin == "fusionkit"


def test_list_components_sorted_and_filtered():
    names = fusionkit.list_components()
    assert names == sorted(names)
    for kind in KINDS:
        sub = fusionkit.list_components(kind)
        assert sub == sorted(sub)
        assert all(fusionkit.get_registry().get(n).kind == kind for n in sub)
    assert set().union(*(fusionkit.list_components(k) for k in KINDS)) == set(names)
    with pytest.raises(RegistryError, match="unknown component kind 'blender'"):
        fusionkit.list_components("blender")


def test_unknown_name_lists_close_matches():
    with pytest.raises(KeyError, match="did you mean 'restitution'"):
        fusionkit.create("restitutoin")
    with pytest.raises(KeyError, match="unknown component 'zzzz'"):
        fusionkit.create("zzzz")


def test_registry_add_validates():
    reg = Registry()
    reg.add("a", torch.nn.Identity, kind="head")
    with pytest.raises(RegistryError, match="already registered"):
        reg.add("a", torch.nn.Identity, kind="head")
    reg.add("a", torch.nn.Linear, kind="head", override=True)
    assert reg.get("a").factory is torch.nn.Linear
    with pytest.raises(RegistryError, match="kind"):
        reg.add("b", torch.nn.Identity, kind="gadget")
    with pytest.raises(RegistryError, match="not callable"):
        reg.add("c", 3, kind="head")


# -- third-party plug-ins through a faked entry point -------------------------------------------------
@pytest.fixture
def fake_plugin(tmp_path, monkeypatch):
    """Write the README's plug-in module to disk and expose it through a fake `fusionkit` entry point."""
    (tmp_path / "my_fusion_blocks.py").write_text(snippet("plugin-module"))
    (tmp_path / "clashing_blocks.py").write_text(
        textwrap.dedent(
            """
            import fusionkit, torch
            @fusionkit.hookimpl
            def fusionkit_register_components(registry):
                registry.add("restitution", torch.nn.Identity, kind="fusion")
            """
        )
    )
    (tmp_path / "overriding_blocks.py").write_text(
        textwrap.dedent(
            """
            import fusionkit, torch
            @fusionkit.hookimpl
            def fusionkit_register_components(registry):
                registry.add("regression_head", torch.nn.Identity, kind="head", override=True)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    installed: list = []
    real = importlib.metadata.entry_points

    def entry_points(**kwargs):
        if kwargs.get("group") == "fusionkit":
            return importlib.metadata.EntryPoints(
                importlib.metadata.EntryPoint(name=n, value=v, group="fusionkit") for n, v in installed
            )
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return installed


def test_plugin_discovered_and_created(fake_plugin):
    fake_plugin.append(("my_blocks", "my_fusion_blocks"))
    spec = fusionkit.get_registry().get("concat_fusion")
    assert (spec.kind, spec.plugin) == ("fusion", "my_blocks")
    exec(compile(snippet("plugin-use"), "README:plugin-use", "exec"), {})
    fusion = fusionkit.create("concat_fusion", d_a=3, d_b=2, d_out=5)
    assert fusion(torch.randn(4, 6, 3), torch.randn(4, 6, 2)).shape == (4, 6, 5)


def test_readme_swap_block_snippet_runs(fake_plugin):
    fake_plugin.append(("my_blocks", "my_fusion_blocks"))
    namespace: dict = {}
    exec(compile(snippet("swap-block"), "README:swap-block", "exec"), namespace)
    composition = namespace["resolve_composition"]("mhmf", {"fusion": "mean_fusion"})
    assert composition["fusion"] == {"block": "mean_fusion", "plugin": "my_blocks", "args": {}}


@pytest.mark.parametrize("blocked", ["my_blocks", "other,my_blocks", "*"])
def test_plugin_blocked_by_env(fake_plugin, monkeypatch, blocked):
    fake_plugin.append(("my_blocks", "my_fusion_blocks"))
    monkeypatch.setenv("FUSIONKIT_DISABLE_PLUGINS", blocked)
    assert "concat_fusion" not in fusionkit.list_components()
    assert "restitution" in fusionkit.list_components()  # built-ins are never blocked


def test_plugin_name_clash_rejected(fake_plugin):
    fake_plugin.append(("clash", "clashing_blocks"))
    with pytest.raises(RegistryError, match="'restitution'.*plug-in 'clash'.*already registered by plug-in 'fusionkit'"):
        fusionkit.get_registry()


def test_plugin_override_allowed(fake_plugin):
    fake_plugin.append(("over", "overriding_blocks"))
    spec = fusionkit.get_registry().get("regression_head")
    assert spec.factory is torch.nn.Identity and spec.plugin == "over"


def test_broken_plugin_named_in_error(fake_plugin):
    fake_plugin.append(("broken", "no_such_module_xyz"))
    with pytest.raises(PluginLoadError, match="plug-in 'broken'.*FUSIONKIT_DISABLE_PLUGINS=broken"):
        fusionkit.get_registry()


def test_import_is_lazy():
    code = "import sys, fusionkit; print('fusionkit.components' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_cli_list_shows_kind_and_plugin():
    res = subprocess.run([sys.executable, "-m", "fusionkit", "list"], capture_output=True, text=True, check=True)
    table, slots = res.stdout.split("\n\n")
    rows = {line.split()[0]: line.split()[1:3] for line in table.splitlines()[1:]}
    assert rows["restitution"] == ["fusion", "fusionkit"]
    assert rows["bert_encoder"] == ["encoder", "fusionkit"]
    by_model = dict(line.split(": ", 1) for line in slots.splitlines()[1:])
    assert set(by_model) == set(fusionkit.list_components("model"))
    assert by_model["mhmf"] == ("text_encoder=bert_encoder, self_attention=self_attention_adapter, "
                                "cross_attention=cross_attention_adapter, memory=gru_memory, restitution=restitution, "
                                "fusion=gated_fusion, head=regression_head")
    assert "fusion=tensor_fusion" in by_model["tfn"] and "fusion=low_rank_fusion" in by_model["lmf"]
    bad = subprocess.run([sys.executable, "-m", "fusionkit", "list", "--kind", "gadget"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error:")


@pytest.mark.slow
def test_cli_show_prints_slots_and_contracts():
    res = subprocess.run([sys.executable, "-m", "fusionkit", "show", "mhmf"], capture_output=True, text=True,
                         check=True)
    for slot in ("text_encoder", "self_attention", "cross_attention", "memory", "restitution", "fusion", "head"):
        assert f"\n  {slot}  (default " in res.stdout, slot
    assert "called as   forward(g_vision, h_vision, g_audio, h_audio)" in res.stdout
    assert "mask convention: (B, T) bool, True = real token" in res.stdout
    block = subprocess.run([sys.executable, "-m", "fusionkit", "show", "gated_fusion"], capture_output=True,
                           text=True, check=True).stdout
    assert "constructor: gated_fusion(*, dim: 'int'" in block and "mhmf.fusion" in block
    bad = subprocess.run([sys.executable, "-m", "fusionkit", "show", "gatd_fusion"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown component 'gatd_fusion'; did you mean")


def test_registry_does_not_import_the_plugin_manager():
    import ast
    from pathlib import Path

    import fusionkit.registry

    tree = ast.parse(Path(fusionkit.registry.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and m.startswith("fusionkit") for m in imported), imported  # plugins/ imports it, not back
    plugin_files = Path(fusionkit.registry.__file__).parent.glob("plugins/*.py")
    assert any("from fusionkit.registry import" in f.read_text() for f in plugin_files)


def test_readme_own_model_snippet_runs():
    exec(compile(snippet("own-model"), "README:own-model", "exec"), {})
