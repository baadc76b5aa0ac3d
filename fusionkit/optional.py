"""Optional dependencies: imported only where they are used, with one error naming the extra that installs them.

Extras (``pip install 'fusionkit[plots,tune,extract]'``): ``plots`` (matplotlib), ``tune`` (optuna,
optuna-dashboard, scipy), ``extract`` (opensmile, soundfile). The core install trains, evaluates and predicts
without any of them.
"""
from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS: dict[str, str] = {
    "matplotlib": "plots",
    "optuna": "tune",
    "optuna_dashboard": "tune",
    "scipy": "tune",
    "opensmile": "extract",
    "soundfile": "extract",
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (e.g. ``"matplotlib.pyplot"``) or raise :class:`MissingExtraError` naming its extra."""
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != top:
            raise  # the package is there but one of its own dependencies is missing: its own error says which
        extra = EXTRAS.get(top)
        fix = f"pip install 'fusionkit[{extra}]'" if extra else f"pip install {top}"
        raise MissingExtraError(f"{purpose} needs {top}, which is not installed; install it with {fix}") from None
