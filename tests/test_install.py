"""The install's layout: compatible ranges, optional extras that stay optional, and their one-line errors."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_no_exact_pins_of_the_heavy_dependencies():
    deps = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0]: d for d in _pyproject()["project"]["dependencies"]}
    for name in ("torch", "torchvision", "transformers", "timm"):
        assert "==" not in deps[name] and ">=" in deps[name], deps[name]


def test_extras_hold_the_optional_packages_and_core_does_not():
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    core = " ".join(project["dependencies"])
    for extra, packages in {"plots": ["matplotlib"], "tune": ["optuna", "optuna-dashboard", "scipy"],
                            "extract": ["opensmile", "soundfile"]}.items():
        for package in packages:
            assert any(d.startswith(package) for d in extras[extra]), (extra, package)
            assert package not in core
    from fusionkit.optional import EXTRAS

    named = {e: {re.split(r"[<>=]", d)[0] for d in extras[e]} for e in ("plots", "tune", "extract")}
    # every optional module's error names an extra that holds it, and every package of those extras has one
    assert all(m.replace("_", "-") in named[e] for m, e in EXTRAS.items())
    assert set().union(*named.values()) == {m.replace("_", "-") for m in EXTRAS}


def test_missing_extra_is_one_error_naming_it(monkeypatch, tmp_path):
    from fusionkit.optional import MissingExtraError
    from fusionkit.training.plots import plot_history

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ModuleNotFoundError
    with pytest.raises(MissingExtraError, match=r"curve.*needs matplotlib.*pip install 'fusionkit\[plots\]'"):
        plot_history([], tmp_path / "curve.png")


def test_restitution_study_without_plots_is_refused_before_any_run(monkeypatch, refusal, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    line = refusal(["--study", "restitution", "--dataset", "synthetic", "--tiny-bert", "--seeds", "1",
                    "--out", str(tmp_path / "out")])
    assert "fusionkit[plots]" in line and not (tmp_path / "out").exists()
