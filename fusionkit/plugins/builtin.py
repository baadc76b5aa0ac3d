"""The plug-in of fusionkit's own blocks and datasets, and the lazy entries of fusionkit's own components.

fusionkit's models (``baselines``, ``recipes``) are not imported here: they are declared through entry points of
the group ``fusionkit`` in ``pyproject.toml``, the same way a third-party plug-in is, so that the library package
never imports the packages above it.

Every component of fusionkit's distribution (these blocks and the models of its entry points) is listed from
the static index (:mod:`fusionkit.plugins.index`) and added lazily: a component's module is imported when the
component is first built, so that listing names or building one small block imports nothing else.
"""
import importlib

from fusionkit.plugins.hookspecs import hookimpl
from fusionkit.registry import _BUILTIN_DECLARATIONS, add_declarations

# Modules whose import declares fusionkit's own blocks (via ``fusionkit.register``).
BUILTIN_MODULES = ("fusionkit.components", "fusionkit.losses", "fusionkit.encoders")


def _loader(name: str, module: str):
    def load():
        importlib.import_module(module)
        for declared, _, factory in reversed(_BUILTIN_DECLARATIONS):
            if declared == name:
                return factory
        raise LookupError(f"built-in component {name!r} is in the index but importing {module} did not declare it; "
                          f"regenerate the index with python -m fusionkit.plugins.index")

    return load


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def add_indexed(registry, package: str) -> int:
    """Add the indexed components declared under ``package`` lazily; returns how many."""
    from fusionkit.plugins.index import load_entries

    count = 0
    for entry in load_entries():
        if in_package(entry["module"], package):
            registry.add_lazy(entry["name"], _loader(entry["name"], entry["module"]), kind=entry["kind"], meta=entry)
            count += 1
    return count


def declare_blocks(registry) -> None:
    """Import the block modules and add their declarations eagerly (how the index is generated)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    add_declarations(registry, "fusionkit")


@hookimpl
def fusionkit_register_components(registry):
    from fusionkit.plugins.index import load_entries

    add_indexed(registry, "fusionkit")
    # declared with ``fusionkit.register`` outside fusionkit's own modules (user code imported before the registry)
    indexed = {entry["name"] for entry in load_entries()}
    for name, kind, factory in _BUILTIN_DECLARATIONS:
        if name not in indexed:
            registry.add(name, factory, kind=kind, override=name in registry)


# fusionkit's own datasets (:mod:`fusionkit.data.builtin_datasets`, which ``tests/test_plugin_dataset.py`` checks
# against this table), by name and in this order, with what ``fusionkit list --kind dataset`` says of each; that
# module (and torch) is imported when one is first resolved.
BUILTIN_DATASETS_MODULE = "fusionkit.data.builtin_datasets"
_PROBE = "Fusion probe on the CMU-MOSI transcripts, simulated nonverbal channels: "
BUILTIN_DATASETS = {
    "synthetic": "Generated review sentences with simulated, label-correlated acoustic and visual channels; no files.",
    "mosi": "CMU-MOSI with word-aligned features read from files (MAG-BERT or MMSA pickle, CMU-MultimodalSDK .csd).",
    "mosei": "CMU-MOSEI with word-aligned features read from files (MAG-BERT or MMSA pickle, CMU-MultimodalSDK .csd).",
    "mosi-sim": "CMU-MOSI transcripts, labels and split with simulated acoustic and visual channels.",
    "mosei-sim": "CMU-MOSEI transcripts, labels and split with simulated acoustic and visual channels.",
    "mosi-covarep": "CMU-MOSI transcripts with the per-segment mean of 73 COVAREP dimensions as the acoustic "
                    "channel; no visual channel.",
    "probe-unique-a": _PROBE + "30% of segments are ironic (target −y); the flag is an acoustic cue on 3 words",
    "probe-unique-v": _PROBE + "30% of segments are ironic (target −y); the flag is a visual cue on 3 words",
    "probe-synergy": _PROBE + "acoustic and visual cues each present with p=1/2; target −y when exactly one is "
                              "present (XOR)",
    "probe-timing": _PROBE + "every segment has an acoustic cue on 3 words; target −y when they are in the first "
                             "half of the utterance (p=0.3)",
    "probe-redundant": _PROBE + "acoustic cue on the words of a fixed sentiment lexicon, signed by polarity; target y",
    "probe-null": _PROBE + "acoustic and visual cues (each p=0.3) unrelated to the target; target y",
}


def _dataset(name: str):
    def resolve(root):
        return importlib.import_module(BUILTIN_DATASETS_MODULE).resolve(name, root)

    def read(source, *, seed, report):
        return importlib.import_module(BUILTIN_DATASETS_MODULE).read(source, seed=seed, report=report)

    return resolve, read


@hookimpl
def fusionkit_register_datasets(datasets):
    for name, description in BUILTIN_DATASETS.items():
        resolve, read = _dataset(name)
        datasets.add(name, resolve=resolve, read=read, description=description)
