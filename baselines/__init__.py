"""Baseline models, each registered as a ``model`` component (one file per model).

This package is a fusionkit plug-in: the entry point ``baselines`` of the group ``fusionkit`` (``pyproject.toml``)
names it, and its hook adds the ``@register`` declarations of its modules. fusionkit lists them from its static
index (``python -m fusionkit.plugins.index`` runs this hook to write it) and imports a model's module only when the
model is built.
"""
from fusionkit.plugins.hookspecs import hookimpl
from fusionkit.registry import add_declarations


@hookimpl
def fusionkit_register_components(registry):
    from baselines import iccn, iccn_e2e, lmf, mag_bert, misa, mult, text_only, tfn  # noqa: F401 - declares them

    add_declarations(registry, "baselines")
