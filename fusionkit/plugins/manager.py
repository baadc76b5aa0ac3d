"""pluggy plug-in manager: built-ins first, then entry points of group ``fusionkit``.

``FUSIONKIT_DISABLE_PLUGINS=a,b`` blocks third-party plug-ins by entry-point name; ``*`` blocks them all.
"""
from __future__ import annotations

import importlib.metadata
import os

import pluggy

from fusionkit.plugins import builtin, hookspecs
from fusionkit.registry import Registry


class PluginLoadError(RuntimeError):
    """A third-party plug-in failed to load or to register its components."""


def disabled_plugins() -> set[str]:
    raw = os.environ.get("FUSIONKIT_DISABLE_PLUGINS", "")
    return {p.strip() for p in raw.split(",") if p.strip()}


def _entry_points():
    return importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP)


def get_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(builtin, name="fusionkit")
    blocked = disabled_plugins()
    if "*" in blocked:  # third-party code is not even looked up
        return pm
    for ep in _entry_points():
        if "*" in blocked or ep.name in blocked:
            continue
        if pm.has_plugin(ep.name):
            raise PluginLoadError(f"two fusionkit plug-ins share the entry-point name {ep.name!r}")
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - re-raised with the plug-in named
            raise PluginLoadError(
                f"fusionkit plug-in {ep.name!r} ({ep.value}) failed to import: {exc}; fix or uninstall it, "
                f"or block it with FUSIONKIT_DISABLE_PLUGINS={ep.name}"
            ) from exc
        pm.register(plugin, name=ep.name)
    return pm


def build_registry() -> Registry:
    """A new registry: the built-in components, then those of every discovered, unblocked plug-in."""
    registry = Registry()
    pm = get_plugin_manager()
    # Built-ins first so that plug-ins clash against them (and may override them explicitly).
    ordered = [("fusionkit", pm.get_plugin("fusionkit"))]
    ordered += [(n, p) for n, p in pm.list_name_plugin() if n != "fusionkit"]
    for name, plugin in ordered:
        impl = getattr(plugin, "fusionkit_register_components", None)
        if impl is None:
            continue
        registry._current_plugin = name
        try:
            impl(registry=registry)
        finally:
            registry._current_plugin = "fusionkit"
    return registry
