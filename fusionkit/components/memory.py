"""Memory blocks: ``gru_memory``, a GRU cell applied independently at every sequence position."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fusionkit.registry import register


@register("gru_memory", kind="memory")
class GRUMemory(nn.Module):
    """``G̃ = GRUCell(C, G_prev)`` at every position at once (MHMF eq. 5).

    The recurrence runs over the *fusion stages* (depth), not over time: each token's memory is updated from
    its own previous state, so the batch and time axes are flattened into one and a single ``nn.GRUCell``
    call updates every position.

    The cell's parameters are ``nn.GRUCell``'s (``cell.weight_ih`` etc., same initialisation and state dict); the
    forward computes the same operations as ``nn.GRUCell`` on CPU, with the reset and update gates' additions
    and sigmoids done as one operation over both gates (:meth:`gru_cell`).
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
        out = self.gru_cell(rearrange(x, "b t d -> (b t) d"), rearrange(state, "b t d -> (b t) d"))
        return rearrange(out, "(b t) d -> b t d", b=batch)

    def gru_cell(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``nn.GRUCell(x, h)`` for ``(N, d_input)``, ``(N, dim)``; the r and z gates fused:
        ``[r; z] = σ(W_i[r;z] x + b + W_h[r;z] h + b)``, ``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))``,
        ``h' = (h − n) ⊙ z + n`` (the same elementwise operations and order as ATen's ``gru_cell``)."""
        cell = self.cell
        dim = cell.hidden_size
        input_gates = F.linear(x, cell.weight_ih, cell.bias_ih)
        hidden_gates = F.linear(h, cell.weight_hh, cell.bias_hh)
        reset_update = torch.sigmoid(hidden_gates[:, :2 * dim] + input_gates[:, :2 * dim])
        reset, update = reset_update[:, :dim], reset_update[:, dim:]
        new = torch.tanh(input_gates[:, 2 * dim:] + hidden_gates[:, 2 * dim:] * reset)
        return (h - new) * update + new
