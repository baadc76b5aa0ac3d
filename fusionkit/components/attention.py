"""One multi-head attention core for self- and cross-attention (``forward(x, context=None)``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def check_divisible(dim: int, heads: int, what: str = "dim") -> None:
    if dim <= 0 or heads <= 0:
        raise ValueError(f"{what} and heads must be positive, got {what}={dim}, heads={heads}")
    if dim % heads:
        raise ValueError(f"{what}={dim} must be divisible by heads={heads}")


def key_padding_bias(mask: torch.Tensor | None) -> torch.Tensor | None:
    """``(B, S)`` bool (True = real) → ``(B, 1, 1, S)`` bool attention mask for SDPA.

    A sample whose keys are all padding would give NaN; it attends to all positions instead (its outputs
    are padding too and are ignored downstream).
    """
    if mask is None:
        return None
    mask = mask.bool()
    mask = mask | ~mask.any(dim=-1, keepdim=True)
    return rearrange(mask, "b s -> b 1 1 s")


class Attention(nn.Module):
    """Multi-head attention with fused ``scaled_dot_product_attention``.

    Queries come from ``x``; keys and values from ``context`` (cross-attention) or ``x`` (self-attention).
    """

    def __init__(
        self,
        *,
        dim: int,
        heads: int = 4,
        dropout: float = 0.0,
        context_dim: int | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        check_divisible(dim, heads)
        self.heads = heads
        self.dropout = dropout
        context_dim = dim if context_dim is None else context_dim
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_kv = nn.Linear(context_dim, 2 * dim, bias=bias)
        self.to_out = nn.Linear(dim, dim, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        *,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            x: ``(B, T, dim)`` queries.
            context: ``(B, S, context_dim)`` keys/values; ``None`` → ``x`` (self-attention).
            context_mask: ``(B, S)`` bool, True = real token; padded keys get no attention weight.
            attn_mask: instead of ``context_mask``, its SDPA form ``key_padding_bias(context_mask)``
                ``(B, 1, 1, S)`` bool, computed once by a caller that runs several layers on the same keys.
        Returns:
            ``(B, T, dim)``.
        """
        if attn_mask is not None and context_mask is not None:
            raise ValueError("pass context_mask or its key_padding_bias attn_mask, not both")
        if attn_mask is None and context_mask is not None:
            attn_mask = key_padding_bias(context_mask)
        context = x if context is None else context
        q = rearrange(self.to_q(x), "b t (h d) -> b h t d", h=self.heads)
        k, v = rearrange(self.to_kv(context), "b s (two h d) -> two b h s d", two=2, h=self.heads)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.to_out(rearrange(out, "b h t d -> b t (h d)"))


@torch.no_grad()
def init_packed_in_proj_(attn: Attention, *, xavier_out: bool) -> None:
    """Initialise ``attn`` as the authors' packed attention (fairseq's / ``nn.MultiheadAttention``'s
    ``in_proj_weight (3·dim, dim)``): one Xavier-uniform draw over the packed matrix (bound
    ``√(6 / (dim + 3·dim))``), split into ``to_q`` (rows ``0:dim``) and ``to_kv`` (rows ``dim:3·dim``, keys then
    values); zero ``to_q``/``to_kv``/``to_out`` biases. ``xavier_out``: ``to_out`` weight Xavier-uniform too
    (fairseq, MulT); otherwise it keeps ``nn.Linear``'s default (``nn.MultiheadAttention``'s ``out_proj``).
    """
    dim = attn.to_q.weight.shape[0]
    if attn.to_kv.weight.shape != (2 * dim, dim):
        raise ValueError(
            f"a packed in_proj needs keys/values of the query width {dim}, got to_kv of shape "
            f"{tuple(attn.to_kv.weight.shape)}"
        )
    packed = torch.empty(3 * dim, dim, dtype=attn.to_q.weight.dtype, device=attn.to_q.weight.device)
    nn.init.xavier_uniform_(packed)
    attn.to_q.weight.copy_(packed[:dim])
    attn.to_kv.weight.copy_(packed[dim:])
    if xavier_out:
        nn.init.xavier_uniform_(attn.to_out.weight)
    for linear in (attn.to_q, attn.to_kv, attn.to_out):
        if linear.bias is not None:
            nn.init.zeros_(linear.bias)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real positions. ``x``: ``(B, T, d)``, ``mask``: ``(B, T)`` bool (True = real) → ``(B, d)``."""
    if mask is None:
        return x.mean(dim=1)
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
