"""The plug-in of fusionkit's own blocks: imports its block modules and adds their ``@register`` declarations.

fusionkit's models (``baselines``, ``recipes``) are not imported here: they register through entry points of
the group ``fusionkit`` declared in ``pyproject.toml``, the same way a third-party plug-in does, so that the
library package never imports the packages above it.
"""
from fusionkit.plugins.hookspecs import hookimpl
from fusionkit.registry import add_declarations


@hookimpl
def fusionkit_register_components(registry):
    import fusionkit.components  # noqa: F401 - importing declares the blocks (lazily: on the first registry call)
    import fusionkit.encoders  # noqa: F401
    import fusionkit.losses  # noqa: F401

    add_declarations(registry, "fusionkit")
