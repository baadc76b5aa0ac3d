"""Model recipes composed from registered blocks.

This package is a fusionkit plug-in: the entry point ``recipes`` of the group ``fusionkit`` (``pyproject.toml``)
names it, and its hook adds the ``@register`` declarations of its modules. fusionkit lists them from its static
index (``python -m fusionkit.plugins.index`` runs this hook to write it) and imports a model's module only when the
model is built.
"""
from fusionkit.plugins.hookspecs import hookimpl
from fusionkit.registry import add_declarations


@hookimpl
def fusionkit_register_components(registry):
    from recipes import mhmf_bert  # noqa: F401 - importing declares mhmf and mhmf_small

    add_declarations(registry, "recipes")
