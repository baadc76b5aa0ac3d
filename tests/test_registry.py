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
    rows = {line.split()[0]: line.split()[1:3] for line in res.stdout.splitlines()[1:]}
    assert rows["restitution"] == ["fusion", "fusionkit"]
    assert rows["bert_encoder"] == ["encoder", "fusionkit"]
    bad = subprocess.run([sys.executable, "-m", "fusionkit", "list", "--kind", "gadget"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error:")


def test_readme_own_model_snippet_runs():
    exec(compile(snippet("own-model"), "README:own-model", "exec"), {})
