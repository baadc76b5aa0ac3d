"""Losses. Importing this package declares them in the registry."""
from fusionkit.losses import misa, restitution  # noqa: F401
