from fusionkit.plugins.hookspecs import ENTRY_POINT_GROUP, hookimpl, hookspec

__all__ = ["ENTRY_POINT_GROUP", "hookimpl", "hookspec"]
