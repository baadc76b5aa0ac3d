"""A plug-in adds a dataset by name (hook ``fusionkit_register_datasets``); ``load_splits`` loads it."""
from __future__ import annotations

import sys
import textwrap

import pytest

import fusionkit
from fusionkit.data import DataError, load_splits

MODULE = textwrap.dedent('''
    import fusionkit
    from fusionkit.data import readers
    from fusionkit.data.api import Source


    def resolve(root):
        return Source(name="tiny-sim", format="any", path=None, simulated=True, dims=(74, 47),
                      description="the synthetic reviews again, under a plug-in's name (SIMULATED channels)")


    def read(source, *, seed, report):
        raw = readers.read_synthetic(seed=seed)
        return {split: segments[:12] for split, segments in raw.items()}


    @fusionkit.hookimpl
    def fusionkit_register_datasets(datasets):
        datasets.add("tiny-sim", resolve=resolve, read=read)
''')


@pytest.fixture
def dataset_plugin(tmp_path, monkeypatch):
    site = tmp_path / "site"
    info = site / "fk_tiny_dataset-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "fk_tiny_dataset.py").write_text(MODULE)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fk-tiny-dataset\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fusionkit]\ntiny_dataset = fk_tiny_dataset\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("FUSIONKIT_DISABLE_PLUGINS", raising=False)
    fusionkit.reset_registry()
    yield
    sys.modules.pop("fk_tiny_dataset", None)
    fusionkit.reset_registry()


def test_a_plugin_dataset_loads_by_name(dataset_plugin):
    spec = fusionkit.get_registry().datasets.get("tiny-sim")
    assert spec is not None and spec.plugin == "tiny_dataset"
    data = load_splits("tiny-sim", cache=False)
    assert data.info.name == "tiny-sim" and data.info.simulated
    assert {len(data.splits[s]) for s in ("train", "valid", "test")} == {12}
    with pytest.raises(DataError, match="unknown dataset 'tiny-sm'.*tiny-sim"):
        load_splits("tiny-sm", cache=False)


def test_without_the_plugin_the_name_is_unknown(monkeypatch):
    monkeypatch.setenv("FUSIONKIT_DISABLE_PLUGINS", "*")
    fusionkit.reset_registry()
    try:
        with pytest.raises(DataError, match="unknown dataset 'tiny-sim'"):
            load_splits("tiny-sim", cache=False)
    finally:
        fusionkit.reset_registry()
