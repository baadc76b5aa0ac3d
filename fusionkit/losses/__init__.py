"""Losses. Importing this package declares them in the registry."""
from fusionkit.losses import cca, misa, restitution  # noqa: F401
