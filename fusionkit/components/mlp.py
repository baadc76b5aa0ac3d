"""timm's ``Mlp`` (``timm.layers.Mlp``, timm 1.0) as fusionkit's blocks use it, without importing timm.

Importing anything from timm imports ``timm.layers``, which imports torchvision and, through it,
``torch._dynamo``: seconds, at every model build, for two linear layers. This is the same module: the same
submodules in the same order (``fc1``, ``act``, ``drop1``, ``norm`` = Identity, ``fc2``, ``drop2``), so the
same parameter names, the same initialisation from the same random state, and the same forward.
"""
from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    """``Linear(in, hidden) → act → Dropout(drop[0]) → Linear(hidden, out) → Dropout(drop[1])``.

    ``drop``: one probability for both dropouts, or a pair (hidden, output), as timm's ``Mlp``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        drop: float | tuple[float, float] = 0.0,
    ) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        drop_probs = tuple(drop) if isinstance(drop, (tuple, list)) else (drop, drop)
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop_probs[0])
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop2 = nn.Dropout(drop_probs[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))
