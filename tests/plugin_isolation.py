"""Hermetic tests: third-party fusionkit plug-ins installed in the environment are invisible to the test suite.

:func:`isolate` (called by ``conftest.py`` when the session starts) takes the entry points of group ``fusionkit``
that are installed *now* and do not belong to fusionkit itself, then

* hides them from ``importlib.metadata.entry_points(group="fusionkit")`` in this process (so tests that clear
  ``FUSIONKIT_DISABLE_PLUGINS`` or fake plug-ins of their own still never see them), and
* adds their names to ``FUSIONKIT_DISABLE_PLUGINS`` for the subprocesses tests start.

fusionkit's own entry points (its built-ins, should they be declared in that group) stay, and plug-ins that tests
create for themselves after the session started are not affected. ``FUSIONKIT_TEST_WITH_PLUGINS=1`` turns the
isolation off (to test against the plug-ins you have installed).
"""
from __future__ import annotations

import importlib.metadata
import os
import re
from pathlib import Path

GROUP = "fusionkit"
OWN_DISTRIBUTIONS = {"fusionkit"}
OWN_PACKAGES = ("fusionkit", "baselines", "recipes", "benchmarks")


def _dist_name(ep) -> str:
    dist = getattr(ep, "dist", None)
    name = getattr(dist, "name", None) or (dist.metadata["Name"] if dist is not None else "") or ""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_own(ep) -> bool:
    """An entry point of fusionkit itself (by distribution, or by the module it loads)."""
    return _dist_name(ep) in OWN_DISTRIBUTIONS or ep.value.split(":")[0].split(".")[0] in OWN_PACKAGES


def third_party_entry_points() -> list:
    """The installed entry points of group ``fusionkit`` that are not fusionkit's own."""
    return [ep for ep in importlib.metadata.entry_points(group=GROUP) if not is_own(ep)]


def isolate(patch_attr=None, patch_env=None) -> list[str]:
    """Hide the third-party plug-ins installed now; returns their entry-point names.

    ``patch_attr`` / ``patch_env``: how to patch (``monkeypatch.setattr`` / ``monkeypatch.setenv`` to undo it after a
    test; default: for the rest of the process).
    """
    if os.environ.get("FUSIONKIT_TEST_WITH_PLUGINS") == "1":
        return []
    hidden = {(ep.name, ep.value) for ep in third_party_entry_points()}
    if not hidden:
        return []
    real = importlib.metadata.entry_points

    def entry_points(**params):
        found = real(**params)
        if params.get("group") != GROUP:
            return found
        return type(found)(ep for ep in found if (ep.name, ep.value) not in hidden)

    names = sorted({name for name, _ in hidden})
    blocked = [p for p in os.environ.get("FUSIONKIT_DISABLE_PLUGINS", "").split(",") if p.strip()]
    value = ",".join(dict.fromkeys([*blocked, *names]))
    if patch_attr is None:
        importlib.metadata.entry_points = entry_points
        os.environ["FUSIONKIT_DISABLE_PLUGINS"] = value
    else:
        patch_attr(importlib.metadata, "entry_points", entry_points)
        patch_env("FUSIONKIT_DISABLE_PLUGINS", value)
    return names


DUMMY_PLUGIN = '''
"""A third-party plug-in as a user may have installed: blocks whose names change "did you mean" suggestions."""
from torch import nn
import fusionkit


class ConcatFusion(nn.Module):
    def __init__(self, *, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, g_vision, h_vision, g_audio, h_audio):
        return self.proj(g_vision + h_vision + g_audio + h_audio)


@fusionkit.hookimpl
def fusionkit_register_components(registry):
    registry.add("concat_fusion", ConcatFusion, kind="fusion")
    registry.add("gated_fusoin_v2", ConcatFusion, kind="fusion")
'''


def install_plugin(site: Path, module: str, source: str, *, entry_point: str) -> Path:
    """Lay out a one-module distribution in ``site`` as ``pip install --target`` would: ``module.py`` with
    ``source``, and a ``.dist-info`` whose ``entry_points.txt`` declares it as ``entry_point`` in group
    ``fusionkit``. Put ``site`` on ``sys.path`` / ``PYTHONPATH`` to install it."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{entry_point} = {module}\n")
    (info / "RECORD").write_text("")
    return site


def install_dummy_plugin(site: Path, *, entry_point: str = "dummy_blocks") -> Path:
    """The distribution ``fk-dummy-blocks`` (two fusion blocks) laid out in ``site`` by :func:`install_plugin`."""
    return install_plugin(site, "fk_dummy_blocks", DUMMY_PLUGIN, entry_point=entry_point)
