"""pluggy plug-in manager: fusionkit's own plug-ins first, then third-party entry points of group ``fusionkit``.

fusionkit's own plug-ins are its block plug-in (:mod:`fusionkit.plugins.builtin`) and the entry points that its
installed distribution declares in ``pyproject.toml`` (``baselines``, ``recipes``: the models). They are read
from the distribution's own metadata, are always loaded, and their components carry the plug-in name
``fusionkit``. The components they declare are listed from the static index (:mod:`fusionkit.plugins.index`)
and their modules imported when a component is first built; an own entry point that the index does not list
is loaded and its hook called like any plug-in's. Every other distribution's entry point is a third-party plug-in, named by its entry-point name.

``FUSIONKIT_DISABLE_PLUGINS=a,b`` blocks third-party plug-ins by entry-point name; ``*`` blocks them all (their
entry points are then not even looked up). fusionkit's own plug-ins cannot be blocked.
"""
from __future__ import annotations

import importlib.metadata
import os

import pluggy

from fusionkit.plugins import builtin, hookspecs
from fusionkit.registry import Registry

DISTRIBUTION = "fusionkit"
BUILTIN_PLUGIN = "fusionkit"  # the plug-in name of every component of fusionkit's own distribution
_OWN_PREFIX = BUILTIN_PLUGIN + ":"


class PluginLoadError(RuntimeError):
    """A plug-in failed to load or to register its components."""


def disabled_plugins() -> set[str]:
    raw = os.environ.get("FUSIONKIT_DISABLE_PLUGINS", "")
    return {p.strip() for p in raw.split(",") if p.strip()}


def _own_entry_points() -> list:
    """The ``fusionkit`` entry points of fusionkit's own installed distribution (empty when not installed)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return []
    return sorted((ep for ep in dist.entry_points if ep.group == hookspecs.ENTRY_POINT_GROUP), key=lambda e: e.name)


def _is_own(ep) -> bool:
    dist = getattr(ep, "dist", None)
    return dist is not None and (dist.name or "").lower() == DISTRIBUTION


def _entry_points():
    """Third-party entry points of group ``fusionkit`` (those of fusionkit's own distribution left out)."""
    return [ep for ep in importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP) if not _is_own(ep)]


def _load(ep, hint: str):
    try:
        return ep.load()
    except Exception as exc:  # noqa: BLE001 - re-raised with the plug-in named
        raise PluginLoadError(f"fusionkit plug-in {ep.name!r} ({ep.value}) failed to import: {exc}; {hint}") from exc


def _indexed_package(ep) -> str | None:
    """The package of one of fusionkit's own entry points when the static index lists its components."""
    from fusionkit.plugins.index import load_entries

    package = ep.value.partition(":")[0].strip()
    if any(builtin.in_package(entry["module"], package) for entry in load_entries()):
        return package
    return None


def get_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(builtin, name=BUILTIN_PLUGIN)
    for ep in _own_entry_points():
        if not _indexed_package(ep):  # listed from the index instead (build_registry), imported when built
            pm.register(_load(ep, "reinstall fusionkit (pip install -e .)"), name=_OWN_PREFIX + ep.name)
    blocked = disabled_plugins()
    if "*" in blocked:  # third-party code is not even looked up
        return pm
    for ep in _entry_points():
        if ep.name in blocked:
            continue
        if pm.has_plugin(ep.name) or ep.name == BUILTIN_PLUGIN:
            raise PluginLoadError(f"two fusionkit plug-ins share the entry-point name {ep.name!r}")
        plugin = _load(ep, f"fix or uninstall it, or block it with FUSIONKIT_DISABLE_PLUGINS={ep.name}")
        pm.register(plugin, name=ep.name)
    return pm


def plugin_name(registered_as: str) -> str:
    """The plug-in name components get: ``fusionkit`` for every plug-in of fusionkit's own distribution."""
    return BUILTIN_PLUGIN if registered_as.startswith(_OWN_PREFIX) else registered_as


def build_registry() -> Registry:
    """A new registry: fusionkit's own components, then those of every discovered, unblocked plug-in."""
    registry = Registry()
    pm = get_plugin_manager()
    # fusionkit's own plug-ins first (in registration order) so that third-party ones clash against them (and may
    # override them explicitly).
    own = [(n, p) for n, p in pm.list_name_plugin() if plugin_name(n) == BUILTIN_PLUGIN]
    ordered = [(BUILTIN_PLUGIN, builtin)] + sorted((x for x in own if x[0] != BUILTIN_PLUGIN), key=lambda x: x[0])
    ordered += [(n, p) for n, p in pm.list_name_plugin() if plugin_name(n) != BUILTIN_PLUGIN]
    # the components of fusionkit's own entry points that the index lists: lazily, right after its blocks
    registry._current_plugin = BUILTIN_PLUGIN
    for ep in _own_entry_points():
        package = _indexed_package(ep)
        if package is not None:
            builtin.add_indexed(registry, package)
    for name, plugin in ordered:
        impl = getattr(plugin, "fusionkit_register_components", None)
        datasets = getattr(plugin, "fusionkit_register_datasets", None)
        registry._current_plugin = plugin_name(name)
        try:
            if impl is not None:
                impl(registry=registry)
            if datasets is not None:
                datasets(datasets=registry.datasets)
        finally:
            registry._current_plugin = BUILTIN_PLUGIN
    return registry
