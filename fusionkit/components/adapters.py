"""Sequence adapters: the self-attention adapter (SA) and the MulT-style cross-attention adapter (CA).

Both are stacks of one pre-LN layer class, :class:`CrossModalLayer`, built on the shared
:class:`~fusionkit.components.attention.Attention` core and timm's ``Mlp`` (:mod:`fusionkit.components.mlp`)::

    cross-attention:  x ← x + Drop(Attn(LN_t(x), LN_s(s)))      (queries from the target x, keys/values from s)
    self-attention:   x ← x + Drop(Attn(LN_t(x), LN_t(x)))
    both:             x ← x + Drop(FFN(LN_f(x)))

``CrossModalLayer`` follows the crossmodal layer of MulT (Tsai et al., 2019) and is meant to be reused: MulT's
``crossmodal_transformer`` is a stack of ``CrossModalLayer`` (plus MulT's own positional embeddings and final
LayerNorm), and MulT's self-attention "memory" transformer is the same class with ``self_attention=True``.

Difference from the MulT authors' ``modules/transformer.py``: their layer normalises target and source with one
shared LayerNorm (possible there because both have the same width); here the source has its own LayerNorm so
that it may have another width ``d_source``. ``shared_norm=True`` restores the authors' sharing (requires
``d_source == dim``).

Adapters take ``dropout`` (each residual branch: attention and FFN outputs), ``attn_dropout`` (attention
weights, default 0 as MulT's audio/vision defaults) and ``ffn_dropout`` (the FFN's hidden activations, default 0
as in BERT's layers, which drop only the residual branches). Dropout masks are not free on CPU: sampling one
costs about 10 ns per element, more than the rest of a 64-wide layer's elementwise work, and the FFN's hidden
layer is 4× wider than the residual stream, so a hidden dropout would triple an adapter layer's sampling.

Mask convention: ``mask (B, T) bool, True = real token``. Outputs at padded target positions are set to zero;
padding never changes the outputs at real positions.
"""
from __future__ import annotations

import torch
from torch import nn

from fusionkit.components import attention as attention_core
from fusionkit.components.attention import Attention, check_divisible
from fusionkit.components.checks import check_dropout, check_positive
from fusionkit.components.mlp import Mlp
from fusionkit.registry import register


def _zero_padding(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask.unsqueeze(-1).to(x.dtype)


class CrossModalLayer(nn.Module):
    """One pre-LN (cross-)attention layer with a position-wise feed-forward network.

    Args:
        dim: width of the target sequence (and of the output).
        heads: attention heads (``dim`` must be divisible by it).
        d_source: width of the source sequence (default ``dim``); ignored with ``self_attention=True``.
        self_attention: keys/values come from the target itself (MulT's self-attention layer).
        ffn_ratio: hidden width of the FFN as a multiple of ``dim`` (MulT: 4).
        act_layer: FFN activation (MulT: ReLU).
        attn_dropout: dropout on the attention weights.
        relu_dropout: dropout after the FFN activation.
        res_dropout: dropout on each branch before its residual addition.
        shared_norm: normalise target and source with one LayerNorm (the MulT authors' code).
    """

    def __init__(
        self,
        *,
        dim: int,
        heads: int = 4,
        d_source: int | None = None,
        self_attention: bool = False,
        ffn_ratio: float = 4.0,
        act_layer: type[nn.Module] = nn.ReLU,
        attn_dropout: float = 0.0,
        relu_dropout: float = 0.0,
        res_dropout: float = 0.0,
        shared_norm: bool = False,
    ) -> None:
        super().__init__()
        check_divisible(dim, heads)
        check_positive(ffn_ratio=ffn_ratio)
        check_dropout(attn_dropout=attn_dropout, relu_dropout=relu_dropout, res_dropout=res_dropout)
        d_source = dim if d_source is None else d_source
        check_positive(d_source=d_source)
        if shared_norm and d_source != dim:
            raise ValueError(
                f"shared_norm=True needs d_source == dim (got d_source={d_source}, dim={dim}); "
                f"use shared_norm=False to give the source its own LayerNorm"
            )
        self.self_attention = self_attention
        self.norm_target = nn.LayerNorm(dim)
        self.norm_source = None
        if not self_attention and not shared_norm:
            self.norm_source = nn.LayerNorm(d_source)
        self.attn = Attention(
            dim=dim, heads=heads, dropout=attn_dropout, context_dim=dim if self_attention else d_source
        )
        self.drop = nn.Dropout(res_dropout)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = Mlp(
            in_features=dim, hidden_features=int(dim * ffn_ratio), act_layer=act_layer, drop=(relu_dropout, res_dropout)
        )

    def forward(
        self,
        target: torch.Tensor,
        source: torch.Tensor | None = None,
        target_mask: torch.Tensor | None = None,
        source_mask: torch.Tensor | None = None,
        *,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            target: ``(B, T, dim)`` queries.
            source: ``(B, S, d_source)`` keys/values; must be ``None`` for a self-attention layer.
            target_mask: ``(B, T)`` bool, True = real token; the key mask of a self-attention layer.
            source_mask: ``(B, S)`` bool, True = real token; the key mask of a cross-attention layer.
            attn_mask: instead of the key mask, its precomputed SDPA form ``key_padding_bias(key mask)``
                ``(B, 1, 1, S)`` (the adapters build it once for all their layers).
        Returns:
            ``(B, T, dim)``; rows at padded target positions are computed but meaningless (callers ignore them).
        """
        normed = self.norm_target(target)
        if self.self_attention:
            if source is not None:
                raise ValueError("this CrossModalLayer was built with self_attention=True: call it without source")
            context, context_mask = normed, target_mask
        else:
            if source is None:
                raise ValueError("this CrossModalLayer is a cross-attention layer: pass source (B, S, d_source)")
            norm = self.norm_target if self.norm_source is None else self.norm_source
            context, context_mask = norm(source), source_mask
        if attn_mask is None:
            attended = self.attn(normed, context=context, context_mask=context_mask)
        else:
            attended = self.attn(normed, context=context, attn_mask=attn_mask)
        x = target + self.drop(attended)
        return x + self.ffn(self.norm_ffn(x))


@register("self_attention_adapter", kind="adapter")
class SelfAttentionAdapter(nn.Module):
    """SA: linear projection ``d_in → d_model``, ``num_layers`` pre-LN self-attention layers, final LayerNorm.

    No positional encoding is added, so SA itself is order-agnostic; word order enters the fusion through the
    BERT hidden states (which carry position embeddings) that the cross-attention adapters attend to.
    """

    def __init__(
        self,
        *,
        d_in: int,
        d_model: int,
        num_layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        ffn_dropout: float = 0.0,
        ffn_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        check_positive(d_in=d_in, d_model=d_model, num_layers=num_layers)
        check_dropout(dropout=dropout, attn_dropout=attn_dropout, ffn_dropout=ffn_dropout)
        self.proj = nn.Linear(d_in, d_model)
        self.layers = nn.ModuleList(
            CrossModalLayer(
                dim=d_model,
                heads=heads,
                self_attention=True,
                ffn_ratio=ffn_ratio,
                act_layer=nn.GELU,
                attn_dropout=attn_dropout,
                relu_dropout=ffn_dropout,
                res_dropout=dropout,
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            x: ``(B, T, d_in)`` unimodal features.
            mask: ``(B, T)`` bool, True = real token; padded positions are never attended to.
        Returns:
            ``(B, T, d_model)``, zero at padded positions.
        """
        x = self.proj(x)
        attn_mask = attention_core.key_padding_bias(mask)  # once for all layers (same keys)
        for layer in self.layers:
            x = layer(x, attn_mask=attn_mask)
        return _zero_padding(self.norm(x), mask)


@register("cross_attention_adapter", kind="adapter")
class CrossAttentionAdapter(nn.Module):
    """CA: ``num_layers`` MulT crossmodal layers (queries from the target, keys/values from the source), final
    LayerNorm (as MulT's encoder). The source may be wider or narrower than the target (``d_source``).

    Unlike MulT's encoder it adds no positional embeddings and no ``sqrt(d)`` input scaling: its inputs are
    already-encoded sequences (SA outputs, BERT hidden states with their position embeddings)."""

    def __init__(
        self,
        *,
        d_model: int,
        d_source: int | None = None,
        num_layers: int = 3,
        heads: int = 4,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        ffn_dropout: float = 0.0,
        ffn_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        check_positive(d_model=d_model, num_layers=num_layers)
        check_dropout(dropout=dropout, attn_dropout=attn_dropout, ffn_dropout=ffn_dropout)
        self.layers = nn.ModuleList(
            CrossModalLayer(
                dim=d_model,
                heads=heads,
                d_source=d_source,
                ffn_ratio=ffn_ratio,
                act_layer=nn.ReLU,
                attn_dropout=attn_dropout,
                relu_dropout=ffn_dropout,
                res_dropout=dropout,
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        target: torch.Tensor,
        source: torch.Tensor,
        target_mask: torch.Tensor | None = None,
        source_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            target: ``(B, T_target, d_model)`` queries (e.g. the audio stream).
            source: ``(B, T_source, d_source)`` keys/values (e.g. a BERT layer); lengths may differ.
            target_mask: ``(B, T_target)`` bool, True = real token (zeroes the output's padded rows).
            source_mask: ``(B, T_source)`` bool, True = real token; padded keys get no attention weight.
        Returns:
            ``(B, T_target, d_model)``, zero at padded target positions.
        """
        x = target
        attn_mask = attention_core.key_padding_bias(source_mask)  # once for all layers (same keys)
        for layer in self.layers:
            x = layer(x, source, attn_mask=attn_mask)
        return _zero_padding(self.norm(x), target_mask)
