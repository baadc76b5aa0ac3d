"""Prediction heads."""
from __future__ import annotations

import torch
from torch import nn

from fusionkit.registry import register


@register("regression_head", kind="head")
class RegressionHead(nn.Module):
    """Dropout → (optional hidden layer with GELU) → linear to one sentiment score."""

    def __init__(self, *, d_in: int, d_hidden: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        if d_in <= 0 or (d_hidden is not None and d_hidden <= 0):
            raise ValueError(f"d_in and d_hidden must be positive, got d_in={d_in}, d_hidden={d_hidden}")
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if d_hidden is not None:
            layers += [nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(dropout)]
            d_in = d_hidden
        layers.append(nn.Linear(d_in, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, d_in)`` pooled features → ``(B,)`` scores."""
        return self.net(x).squeeze(-1)


@register("iccn_regressor", kind="head")
class ICCNRegressor(nn.Module):
    """The ICCN authors' downstream regressor: two ReLU layers of ``d_hidden``, dropout, then one output.

    ``Linear(d_in → d_hidden) → ReLU → Linear(d_hidden → d_hidden) → ReLU → Dropout → Linear(d_hidden → 1)``
    (dropout only before the last layer, as in their ``Regressor``).
    """

    def __init__(self, *, d_in: int, d_hidden: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        if d_in <= 0 or d_hidden <= 0:
            raise ValueError(f"d_in and d_hidden must be positive, got d_in={d_in}, d_hidden={d_hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got dropout={dropout}")
        self.net = nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_hidden), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(d_hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, d_in)`` → ``(B,)`` scores."""
        return self.net(x).squeeze(-1)
