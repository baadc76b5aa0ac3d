"""fusionkit — modular multimodal sentiment analysis (MHMF-BERT and its baselines) for PyTorch.

Importing the package is cheap: components and plug-ins are loaded on the first registry call.
"""
from fusionkit.plugins.hookspecs import hookimpl
from fusionkit.plugins.manager import build_registry as _build_registry
from fusionkit.registry import KINDS, Registry, create, get_registry, list_components, register, reset_registry
from fusionkit.registry import set_registry_builder as _set_registry_builder

_set_registry_builder(_build_registry)  # the plug-in manager builds the registry; registry.py never imports it

__version__ = "0.1.0"

__all__ = [
    "KINDS",
    "Registry",
    "create",
    "get_registry",
    "hookimpl",
    "list_components",
    "load",
    "plan",
    "register",
    "reset_registry",
]


def load(checkpoint_dir, **kwargs):
    """Load a trained model from a checkpoint directory; see :func:`fusionkit.inference.load`."""
    from fusionkit.inference import load as _load

    return _load(checkpoint_dir, **kwargs)


def plan(model: str, data=None, **options):
    """Check ``options`` for ``model`` on ``data`` once and dry-run it; see :func:`fusionkit.planning.plan`."""
    from fusionkit.planning import plan as _plan

    return _plan(model, data, **options)
