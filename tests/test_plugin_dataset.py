"""A plug-in adds a dataset by name (hook ``fusionkit_register_datasets``); ``load_splits`` loads it."""
from __future__ import annotations

import json
import sys
import textwrap

import pytest

import fusionkit
from fusionkit.data import DATASET_NAMES, DataError, load_splits
from fusionkit.registry import RegistryError
from plugin_isolation import install_plugin

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
    site = install_plugin(tmp_path / "site", "fk_tiny_dataset", MODULE, entry_point="tiny_dataset")
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
    # a named dataset brings its own channels: feature tables join a segment table's path only
    with pytest.raises(DataError, match="dataset 'tiny-sim' comes with its own channels"):
        load_splits("tiny-sim", features={"acoustic": "covarep.csv"}, cache=False)


def test_list_shows_the_builtin_and_the_plugin_datasets(dataset_plugin, capsys):
    from fusionkit.__main__ import main

    assert main(["list", "--kind", "dataset", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [*DATASET_NAMES, "tiny-sim"]
    assert rows[-1] == {"name": "tiny-sim", "kind": "dataset", "plugin": "tiny_dataset", "description": ""}
    assert rows[0]["plugin"] == "fusionkit" and rows[0]["description"].startswith("Generated review sentences")


def test_without_the_plugin_the_name_is_unknown(monkeypatch):
    monkeypatch.setenv("FUSIONKIT_DISABLE_PLUGINS", "*")
    fusionkit.reset_registry()
    try:
        with pytest.raises(DataError, match="unknown dataset 'tiny-sim'"):
            load_splits("tiny-sim", cache=False)
    finally:
        fusionkit.reset_registry()


BUILTIN_WAY = textwrap.dedent('''
    import fusionkit
    from fusionkit.data import readers
    from fusionkit.data.api import Source


    def resolve(root):
        return Source(name="reviews", format="synthetic", path=None, simulated=True, dims=(74, 47),
                      description="the synthetic reviews under another name (SIMULATED channels)")


    @fusionkit.hookimpl
    def fusionkit_register_datasets(datasets):
        datasets.add("reviews", resolve=resolve, read=readers.read_source)  # as fusionkit's own are added
        datasets.add("synthetic", resolve=resolve, read=readers.read_source, override=True)
''')


def test_the_builtin_datasets_are_registered_entries_in_their_order():
    from fusionkit.data import DATASET_NAMES
    from fusionkit.data.builtin_datasets import RESOLVERS
    from fusionkit.plugins import builtin

    from fusionkit.data.probes import PROBES

    datasets = fusionkit.get_registry().datasets
    assert datasets.names(builtin=True) == list(DATASET_NAMES) == list(builtin.BUILTIN_DATASETS) == list(RESOLVERS)
    assert {datasets.get(n).plugin for n in DATASET_NAMES} == {"fusionkit"}
    # what `fusionkit list --kind dataset` says of a probe is the probe's own rule
    assert all(datasets.get(p).description.endswith(": " + rule.summary) for p, rule in PROBES.items())


def test_a_plugin_dataset_registered_the_builtin_way_loads_by_name(tmp_path, monkeypatch):
    site = install_plugin(tmp_path / "site", "fk_reviews", BUILTIN_WAY, entry_point="reviews")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("FUSIONKIT_DISABLE_PLUGINS", raising=False)
    fusionkit.reset_registry()
    try:
        # a built-in name cannot be taken, not even with override=True
        with pytest.raises(RegistryError, match="'synthetic' from plug-in 'reviews' is a built-in dataset"):
            fusionkit.get_registry()
        (site / "fk_reviews.py").write_text(BUILTIN_WAY.rsplit("    datasets.add(\"synthetic\"", 1)[0])
        sys.modules.pop("fk_reviews", None)
        fusionkit.reset_registry()
        data = load_splits("reviews", cache=False, max_samples=5)
        reference = load_splits("synthetic", cache=False, max_samples=5)
        assert (data.info.name, data.info.format, data.info.channels) == ("reviews", "synthetic",
                                                                          reference.info.channels)
        for split in ("train", "valid", "test"):
            assert data.splits[split].ids == reference.splits[split].ids
            assert (data.splits[split].acoustic == reference.splits[split].acoustic).all()
    finally:
        sys.modules.pop("fk_reviews", None)
        fusionkit.reset_registry()
