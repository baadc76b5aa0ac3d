"""The built-in plug-in: imports fusionkit's own modules and adds their ``@register`` declarations."""
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


@hookimpl
def fusionkit_register_components(registry):
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for name, kind, factory in _BUILTIN_DECLARATIONS:
        registry.add(name, factory, kind=kind)
