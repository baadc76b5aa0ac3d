"""The suite is hermetic: a third-party plug-in installed in the environment changes no test's outcome."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fusionkit
from plugin_isolation import install_dummy_plugin, isolate, third_party_entry_points

ROOT = Path(__file__).resolve().parents[1]


def _suggestion() -> str:
    """The registry's "did you mean" answer to a misspelt fusion block, and the fusion blocks it lists."""
    fusionkit.reset_registry()
    with pytest.raises(KeyError) as info:
        fusionkit.get_registry().get("gated_fusoin")
    return f"{info.value}; fusion blocks: {', '.join(fusionkit.list_components('fusion'))}"


def test_an_installed_plugin_is_hidden_and_suggestions_stay_as_they_were(tmp_path, monkeypatch):
    before = _suggestion()
    # its own entry-point name, so that it is "installed after the session started" even in a run that began
    # with the same dummy plug-in installed (which the session has hidden already)
    site = install_dummy_plugin(tmp_path / "site", entry_point="late_dummy_blocks")
    monkeypatch.syspath_prepend(str(site))  # installed after the session started: not hidden yet
    importlib.invalidate_caches()
    monkeypatch.delenv("FUSIONKIT_DISABLE_PLUGINS", raising=False)
    try:
        assert [ep.name for ep in third_party_entry_points()] == ["late_dummy_blocks"]
        # control: the plug-in is discovered and changes the "did you mean" suggestions
        changed = _suggestion()
        assert changed != before and "gated_fusoin_v2" in changed and "concat_fusion" in changed
        assert isolate(monkeypatch.setattr, monkeypatch.setenv) == ["late_dummy_blocks"]
        assert os.environ["FUSIONKIT_DISABLE_PLUGINS"].split(",")[-1] == "late_dummy_blocks"
        assert _suggestion() == before
        monkeypatch.delenv("FUSIONKIT_DISABLE_PLUGINS")  # hidden even from a test that clears the variable
        assert _suggestion() == before and "gated_fusoin_v2" not in fusionkit.list_components()
    finally:
        sys.modules.pop("fk_dummy_blocks", None)
        fusionkit.reset_registry()


def test_own_entry_points_are_never_hidden():
    from importlib.metadata import EntryPoint

    from plugin_isolation import is_own

    assert is_own(EntryPoint(name="fusionkit", value="fusionkit.plugins.builtin", group="fusionkit"))
    assert is_own(EntryPoint(name="baselines", value="baselines:plugin", group="fusionkit"))
    assert not is_own(EntryPoint(name="mine", value="my_blocks", group="fusionkit"))


@pytest.mark.slow
def test_pytest_passes_with_a_dummy_plugin_installed(tmp_path):
    """The tests that depend on the registry's contents pass in a pytest run with the plug-in on PYTHONPATH."""
    site = install_dummy_plugin(tmp_path / "site")
    env = {k: v for k, v in os.environ.items() if k != "FUSIONKIT_DISABLE_PLUGINS"}
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]), OMP_NUM_THREADS="1")
    seen = subprocess.run([sys.executable, "-c", "import fusionkit; print('gated_fusoin_v2' in "
                                                 "fusionkit.list_components())"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert seen.stdout.strip() == "True", seen.stderr  # the plug-in is installed and active outside the tests
    suggestions = "tests/test_slots.py::test_unknown_block_lists_close_matches"

    def pytest_run(*args, **extra):
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                              capture_output=True, text=True, env={**env, **extra}, cwd=ROOT, timeout=600)

    proc = pytest_run(suggestions, "tests/test_registry.py")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "installed fusionkit plug-ins hidden from the tests: dummy_blocks" in proc.stdout
    control = pytest_run(suggestions, FUSIONKIT_TEST_WITH_PLUGINS="1")  # isolation off: the suggestions change
    assert control.returncode == 1 and "gated_fusoin_v2" in control.stdout, control.stdout[-3000:]
