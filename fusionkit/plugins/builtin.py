"""The built-in plug-in: adds fusionkit's own components to the registry.

They are added lazily from the static index (:mod:`fusionkit.plugins.index`): a component's module is imported
when the component is first built, so that listing names or building one small block imports nothing else.
"""
import importlib

from fusionkit.plugins.hookspecs import hookimpl
from fusionkit.registry import _BUILTIN_DECLARATIONS

# Modules whose import declares built-in components (via ``fusionkit.register``).
BUILTIN_MODULES = (
    "fusionkit.components",
    "fusionkit.losses",
    "fusionkit.encoders",
    "recipes.mhmf_bert",
    "baselines",
)


def _loader(name: str, module: str):
    def load():
        importlib.import_module(module)
        for declared, _, factory in reversed(_BUILTIN_DECLARATIONS):
            if declared == name:
                return factory
        raise LookupError(f"built-in component {name!r} is in the index but importing {module} did not declare it; "
                          f"regenerate the index with python -m fusionkit.plugins.index")

    return load


@hookimpl
def fusionkit_register_components(registry):
    from fusionkit.plugins.index import load_entries

    indexed = set()
    for entry in load_entries():
        registry.add_lazy(entry["name"], _loader(entry["name"], entry["module"]), kind=entry["kind"], meta=entry)
        indexed.add(entry["name"])
    # declared with ``fusionkit.register`` outside the built-in modules (user code imported before the registry)
    for name, kind, factory in _BUILTIN_DECLARATIONS:
        if name not in indexed:
            registry.add(name, factory, kind=kind, override=name in registry)
