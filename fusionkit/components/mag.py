"""``multimodal_adaptation_gate`` — the Multimodal Adaptation Gate of MAG-BERT (Rahman et al., ACL 2020).

For each word piece, the nonverbal features shift the text representation ``z``::

    g_v = ReLU(W_hv [v; z])      g_a = ReLU(W_ha [a; z])
    H   = g_v ⊙ (W_v v) + g_a ⊙ (W_a a)
    α   = min(‖z‖ / ‖H‖ · β, 1)
    out = Dropout(LayerNorm(z + α H))

Follows ``MAG`` in ``modeling.py`` of WasifurRahman/BERT_multimodal_transformer, including its parameter names
(``W_hv``, ``W_ha``, ``W_v``, ``W_a``, ``LayerNorm``), the ``[nonverbal; text]`` concatenation order, and its
numerics: ``‖H‖`` is replaced by 1 where it is exactly 0 and ``α = min(‖z‖ / (‖H‖ + ε) · β, 1)`` with
``ε = 1e-6``.

An absent modality (``d_acoustic=0`` or ``d_visual=0``) has no gate and no projection: its term of ``H`` is
absent (``H = g_a ⊙ (W_a a)`` without vision). At least one nonverbal modality is needed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusionkit.registry import register


@register("multimodal_adaptation_gate", kind="fusion")
class MultimodalAdaptationGate(nn.Module):
    """MAG: a norm-bounded, gated nonverbal shift of the text representation.

    Args:
        d_model: width of the text representation ``z`` (BERT hidden size).
        d_acoustic, d_visual: nonverbal feature sizes; 0 = the modality is absent (its term of ``H`` drops out).
        beta_shift: ``β``, the largest allowed ratio ``‖αH‖ / ‖z‖`` (authors' MOSI default 1.0).
        dropout: dropout after the LayerNorm (authors' default 0.5).
        eps: added to ``‖H‖`` (authors: 1e-6).
        layer_norm_eps: epsilon of the LayerNorm (authors: PyTorch's default 1e-5).

    Signature ``forward(z, acoustic, visual)``: usable as the ``injection`` of ``bert_encoder`` with
    ``injection_inputs={"acoustic": …, "visual": …}``.
    """

    def __init__(
        self,
        *,
        d_model: int,
        d_acoustic: int = 74,
        d_visual: int = 47,
        beta_shift: float = 1.0,
        dropout: float = 0.5,
        eps: float = 1e-6,
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if d_model <= 0 or min(d_acoustic, d_visual) < 0 or max(d_acoustic, d_visual) == 0:
            raise ValueError(
                f"multimodal_adaptation_gate needs a positive d_model and at least one nonverbal modality (sizes "
                f"≥ 0, 0 = absent), got d_model={d_model}, d_acoustic={d_acoustic}, d_visual={d_visual}"
            )
        if beta_shift <= 0:
            raise ValueError(f"beta_shift must be positive, got {beta_shift}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.d_acoustic, self.d_visual = d_acoustic, d_visual
        self.beta_shift = beta_shift
        self.eps = eps
        self.W_hv = nn.Linear(d_visual + d_model, d_model) if d_visual else None
        self.W_ha = nn.Linear(d_acoustic + d_model, d_model) if d_acoustic else None
        self.W_v = nn.Linear(d_visual, d_model) if d_visual else None
        self.W_a = nn.Linear(d_acoustic, d_model) if d_acoustic else None
        self.LayerNorm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def shift(self, z: torch.Tensor, acoustic: torch.Tensor | None, visual: torch.Tensor | None) -> torch.Tensor:
        """The scaled displacement ``αH`` (``(B, T, d_model)``), before the residual, LayerNorm and dropout."""
        got_a = 0 if acoustic is None else acoustic.shape[-1]
        got_v = 0 if visual is None else visual.shape[-1]
        if got_a != self.d_acoustic or got_v != self.d_visual:
            raise ValueError(
                f"multimodal_adaptation_gate was built for d_acoustic={self.d_acoustic}, d_visual={self.d_visual} "
                f"(0 = absent); got acoustic {None if acoustic is None else tuple(acoustic.shape)}, visual "
                f"{None if visual is None else tuple(visual.shape)}"
            )
        present = [x for x in (acoustic, visual) if x is not None]
        if any(x.shape[:-1] != z.shape[:-1] for x in present):
            raise ValueError(
                f"MAG needs nonverbal features aligned to the text tokens: text {tuple(z.shape[:-1])}, acoustic "
                f"{None if acoustic is None else tuple(acoustic.shape[:-1])}, visual "
                f"{None if visual is None else tuple(visual.shape[:-1])} (use word-piece aligned batches)"
            )
        if visual is not None and acoustic is not None:
            gate_v = F.relu(self.W_hv(torch.cat([visual, z], dim=-1)))
            gate_a = F.relu(self.W_ha(torch.cat([acoustic, z], dim=-1)))
            h = gate_v * self.W_v(visual) + gate_a * self.W_a(acoustic)
        elif visual is not None:
            h = F.relu(self.W_hv(torch.cat([visual, z], dim=-1))) * self.W_v(visual)
        else:
            h = F.relu(self.W_ha(torch.cat([acoustic, z], dim=-1))) * self.W_a(acoustic)
        z_norm = z.norm(p=2, dim=-1)
        h_norm = h.norm(p=2, dim=-1)
        h_norm = torch.where(h_norm == 0, torch.ones_like(h_norm), h_norm)
        alpha = (z_norm / (h_norm + self.eps) * self.beta_shift).clamp(max=1.0)
        return alpha.unsqueeze(-1) * h

    def forward(self, z: torch.Tensor, acoustic: torch.Tensor | None, visual: torch.Tensor | None) -> torch.Tensor:
        """
        Args:
            z: ``(B, T, d_model)`` text representation (MAG-BERT: the BERT embedding output).
            acoustic: ``(B, T, d_acoustic)``, visual: ``(B, T, d_visual)`` aligned to the text positions (zero rows
                at padding; positions are independent, so no mask is needed); ``None`` for an absent modality.
        Returns:
            ``(B, T, d_model)`` = ``Dropout(LayerNorm(z + αH))``.
        """
        return self.dropout(self.LayerNorm(z + self.shift(z, acoustic, visual)))
