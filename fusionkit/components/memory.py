"""Memory blocks: ``gru_memory``, a GRU cell applied independently at every sequence position."""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from fusionkit.registry import register


@register("gru_memory", kind="memory")
class GRUMemory(nn.Module):
    """``G̃ = GRUCell(C, G_prev)`` at every position at once (MHMF eq. 5).

    The recurrence runs over the *fusion stages* (depth), not over time: each token's memory is updated from
    its own previous state, so the batch and time axes are flattened into one and a single ``nn.GRUCell``
    call updates every position.
    """

    def __init__(self, *, dim: int, d_input: int | None = None) -> None:
        super().__init__()
        d_input = dim if d_input is None else d_input
        if dim <= 0 or d_input <= 0:
            raise ValueError(f"dim and d_input must be positive, got dim={dim}, d_input={d_input}")
        self.cell = nn.GRUCell(d_input, dim)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, T, d_input)`` new input ``C`` (e.g. the cross-attention output).
            state: ``(B, T, dim)`` previous memory ``G_prev``.
        Returns:
            ``(B, T, dim)`` updated memory ``G̃``. Positions are independent, so no mask is needed:
            padded positions (mask False) never influence real ones.
        """
        if x.shape[:2] != state.shape[:2]:
            raise ValueError(
                f"gru_memory needs input and state on the same (B, T) grid, got {tuple(x.shape[:2])} and "
                f"{tuple(state.shape[:2])}"
            )
        batch = x.shape[0]
        out = self.cell(rearrange(x, "b t d -> (b t) d"), rearrange(state, "b t d -> (b t) d"))
        return rearrange(out, "(b t) d -> b t d", b=batch)
