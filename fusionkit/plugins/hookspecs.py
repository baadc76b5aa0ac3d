"""The one hook of fusionkit's plug-in system."""
import pluggy

PROJECT_NAME = "fusionkit"
ENTRY_POINT_GROUP = "fusionkit"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def fusionkit_register_components(registry):
    """Add components to ``registry`` by calling ``registry.add(name, factory, kind=...)``.

    ``kind`` is one of ``adapter``, ``memory``, ``fusion``, ``loss``, ``encoder``, ``head``, ``model``.
    Re-using a name that is already taken raises unless ``override=True`` is passed.
    """
