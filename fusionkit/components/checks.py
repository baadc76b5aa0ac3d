"""Argument checks shared by the blocks' constructors (each raises one ``ValueError`` naming the argument)."""
from __future__ import annotations


def check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {name}={value}")


def check_dropout(**values: float) -> None:
    for name, value in values.items():
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {name}={value}")
