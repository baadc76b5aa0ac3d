"""``crossmodal_transformer`` — MulT's directional crossmodal transformer (Tsai et al., ACL 2019).

Follows ``TransformerEncoder`` in ``modules/transformer.py`` of https://github.com/yaohungt/Multimodal-Transformer:

    x ← Dropout(√d · x + P(x)),   s ← Dropout(√d · s + P(s))          (scaled input + sinusoidal positions)
    x ← CrossModalLayer(x, s)  × layers                               (pre-LN; target and source share one LN)
    out = LayerNorm(x)

With ``self_attention=True`` it is MulT's self-attention "memory" transformer over the concatenated crossmodal
outputs. The layers are fusionkit's :class:`~fusionkit.components.adapters.CrossModalLayer` with
``shared_norm=True`` (the authors' shared LayerNorm), ReLU feed-forward of width 4d, and MulT's three dropouts
(attention weights, after the ReLU, on each residual branch). Initialisation as the authors'
(:func:`init_like_mult_`): Xavier-uniform attention projections (one draw over the packed ``(3d, d)`` input
projection) and FFN weights, zero biases.

Positions (:class:`SinusoidalPositions`) are fairseq's / the authors' table: position ``p`` of a sequence
(``p = 1, 2, …``) gets ``[sin(p·ω_i); cos(p·ω_i)]``, ``ω_i = 10000^(−i/(d/2 − 1))``, odd ``d`` zero-padded; the
authors give position 0 (a zero vector) to steps whose first feature is exactly 0 (their padding test); here
padded steps are those with ``mask = False``.

``attn_mask=True`` is MulT's "future" mask (on by default in its ``main.py``): query step ``t`` attends to source
steps ``s ≤ t + |S − T|`` only. Padded keys are never attended to (the authors' data have fixed length and no key
padding mask).

:class:`TemporalConvProjection` is MulT's 1-D convolution that maps each modality to the model width
(kernel 1 and no bias in the authors' code; the paper also uses kernel 3).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fusionkit.components.adapters import CrossModalLayer
from fusionkit.components.attention import Attention, init_packed_in_proj_, key_padding_bias
from fusionkit.registry import register


class SinusoidalPositions(nn.Module):
    """MulT's (fairseq's) sinusoidal position embeddings; positions start at 1, padded steps get zeros."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"SinusoidalPositions needs a positive dim, got {dim}")
        self.dim = dim

    def table(self, length: int, device=None) -> torch.Tensor:
        """``(length + 1, dim)`` with row ``p`` the embedding of position ``p`` (row 0: zeros)."""
        half = self.dim // 2
        if half < 2:
            raise ValueError(f"sinusoidal positions need dim ≥ 4, got {self.dim}")
        freq = torch.exp(torch.arange(half, dtype=torch.float, device=device) * -(math.log(10000) / (half - 1)))
        angles = torch.arange(length + 1, dtype=torch.float, device=device)[:, None] * freq[None, :]
        emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
        emb = F.pad(emb, (0, self.dim - 2 * half))
        emb[0] = 0.0
        return emb

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B, T, dim)`` (only its shape is used); ``mask``: ``(B, T)`` bool, True = real step → ``(B, T, dim)``."""
        batch, length, _ = x.shape
        positions = torch.arange(1, length + 1, device=x.device).expand(batch, length)
        if mask is not None:
            positions = positions * mask.long()
        return self.table(length, device=x.device).to(x.dtype)[positions]


def future_mask(target_len: int, source_len: int, device=None) -> torch.Tensor:
    """``(T, S)`` bool, True = may attend: MulT's ``buffered_future_mask`` (``s ≤ t + |S − T|``)."""
    t = torch.arange(target_len, device=device)[:, None]
    s = torch.arange(source_len, device=device)[None, :]
    return s <= t + abs(source_len - target_len)


class FutureMaskedAttention(Attention):
    """:class:`Attention` that also applies MulT's future mask (same parameters, same computation otherwise)."""

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x (B, T, dim)``, ``context (B, S, context_dim)``, ``context_mask (B, S)`` bool, True = real → ``(B, T, dim)``."""
        context = x if context is None else context
        q = rearrange(self.to_q(x), "b t (h d) -> b h t d", h=self.heads)
        k, v = rearrange(self.to_kv(context), "b s (two h d) -> two b h s d", two=2, h=self.heads)
        allowed = future_mask(x.shape[1], context.shape[1], device=x.device)[None, None]
        padding = key_padding_bias(context_mask)
        if padding is not None:
            combined = allowed & padding
            allowed = combined | ~combined.any(dim=-1, keepdim=True)  # a fully masked row attends everywhere
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        return self.to_out(rearrange(out, "b h t d -> b t (h d)"))


@torch.no_grad()
def init_like_mult_(layer: CrossModalLayer) -> None:
    """The MulT authors' initialisation of one layer: attention as fairseq's ``MultiheadAttention``
    (Xavier-uniform packed ``in_proj_weight`` and ``out_proj.weight``, zero biases) and the FFN's ``fc1``/``fc2``
    from their ``Linear`` helper (Xavier-uniform weights, zero biases); LayerNorms at (1, 0)."""
    init_packed_in_proj_(layer.attn, xavier_out=True)
    for fc in (layer.ffn.fc1, layer.ffn.fc2):
        nn.init.xavier_uniform_(fc.weight)
        nn.init.zeros_(fc.bias)


@register("crossmodal_transformer", kind="adapter")
class CrossmodalTransformer(nn.Module):
    """MulT's crossmodal transformer ``source → target`` (or, with ``self_attention=True``, its memory transformer).

    Args:
        dim: width of the (already projected) target and source sequences.
        heads: attention heads.
        layers: number of crossmodal layers ``D``.
        attn_dropout: dropout on the attention weights.
        relu_dropout: dropout after the FFN's ReLU.
        res_dropout: dropout on each residual branch.
        embed_dropout: dropout after scaling and adding positions (to target and source).
        attn_mask: MulT's future mask (see module docstring).
        self_attention: keys/values from the target itself (MulT's ``trans_*_mem``).
    """

    def __init__(
        self,
        *,
        dim: int,
        heads: int = 5,
        layers: int = 4,
        attn_dropout: float = 0.1,
        relu_dropout: float = 0.1,
        res_dropout: float = 0.1,
        embed_dropout: float = 0.25,
        attn_mask: bool = True,
        self_attention: bool = False,
    ) -> None:
        super().__init__()
        if layers <= 0:
            raise ValueError(f"crossmodal_transformer needs at least one layer, got layers={layers}")
        if not 0.0 <= embed_dropout < 1.0:
            raise ValueError(f"embed_dropout must be in [0, 1), got {embed_dropout}")
        self.dim = dim
        self.self_attention = self_attention
        self.embed_scale = math.sqrt(dim)
        self.embed_positions = SinusoidalPositions(dim=dim)
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.layers = nn.ModuleList()
        for _ in range(layers):
            layer = CrossModalLayer(
                dim=dim,
                heads=heads,
                self_attention=self_attention,
                ffn_ratio=4.0,
                act_layer=nn.ReLU,
                attn_dropout=attn_dropout,
                relu_dropout=relu_dropout,
                res_dropout=res_dropout,
                shared_norm=True,
            )
            if attn_mask:  # same parameters; adds MulT's future mask to the attention
                layer.attn = FutureMaskedAttention(dim=dim, heads=heads, dropout=attn_dropout)
            init_like_mult_(layer)
            self.layers.append(layer)
        self.layer_norm = nn.LayerNorm(dim)

    def embed(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"crossmodal_transformer was built for width {self.dim}, got a sequence of shape {tuple(x.shape)}; "
                f"project it first (TemporalConvProjection)"
            )
        return self.embed_dropout(self.embed_scale * x + self.embed_positions(x, mask))

    def forward(
        self,
        x: torch.Tensor,
        source: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        source_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            x: ``(B, T, dim)`` target sequence (queries).
            source: ``(B, S, dim)`` source sequence (keys/values); ``None`` for a self-attention transformer.
            mask: ``(B, T)`` bool, True = real step of the target.
            source_mask: ``(B, S)`` bool, True = real step of the source; padded keys get no weight.
        Returns:
            ``(B, T, dim)``; rows at padded target steps are computed but meaningless.
        """
        if self.self_attention and source is not None:
            raise ValueError("this crossmodal_transformer is a self-attention (memory) transformer: call it without source")
        if not self.self_attention and source is None:
            raise ValueError("this crossmodal_transformer attends to a source: pass source (B, S, dim)")
        x = self.embed(x, mask)
        if self.self_attention:
            for layer in self.layers:
                x = layer(x, target_mask=mask)
        else:
            source = self.embed(source, source_mask)
            for layer in self.layers:
                x = layer(x, source, target_mask=mask, source_mask=source_mask)
        return self.layer_norm(x)


class TemporalConvProjection(nn.Module):
    """MulT's ``proj_*``: ``Conv1d(d_in, d_out, kernel_size, bias=False)`` over time (same length out), or the
    identity when ``d_in == d_out`` (as the authors skip it then).

    With ``mask``, padded steps enter the convolution as zero rows (the authors' padding rows are zero vectors), so
    with ``kernel_size > 1`` a real step's output does not depend on what stands at the padding (BERT's hidden
    states at [PAD] are not zero) nor on how far its batch is padded. With kernel 1 real steps are unchanged."""

    def __init__(self, *, d_in: int, d_out: int, kernel_size: int = 1) -> None:
        super().__init__()
        if d_in <= 0 or d_out <= 0:
            raise ValueError(f"TemporalConvProjection needs positive sizes, got d_in={d_in}, d_out={d_out}")
        if kernel_size <= 0 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number (length-preserving), got {kernel_size}")
        self.d_in = d_in
        self.conv = None
        if d_in != d_out:
            self.conv = nn.Conv1d(d_in, d_out, kernel_size=kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B, T, d_in)``, ``mask``: ``(B, T)`` bool, True = real step → ``(B, T, d_out)``."""
        if x.shape[-1] != self.d_in:
            raise ValueError(f"TemporalConvProjection was built for d_in={self.d_in}, got a sequence of shape {tuple(x.shape)}")
        if self.conv is None:
            return x
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)
        return rearrange(self.conv(rearrange(x, "b t d -> b d t")), "b d t -> b t d")


@register("crossmodal_cross_attention", kind="adapter")
def crossmodal_cross_attention(
    *,
    d_model: int,
    num_layers: int = 4,
    heads: int = 5,
    dropout: float = 0.1,
    attn_dropout: float = 0.1,
    ffn_dropout: float = 0.1,
    embed_dropout: float = 0.25,
    attn_mask: bool = True,
) -> CrossmodalTransformer:
    """MulT's crossmodal transformer under the cross-attention adapter's keywords (e.g. as ``mhmf``'s
    ``cross_attention``): ``d_model`` → ``dim``, ``num_layers`` → ``layers``, ``dropout`` → ``res_dropout``,
    ``ffn_dropout`` → ``relu_dropout``; the source must already have width ``d_model``."""
    return CrossmodalTransformer(dim=d_model, heads=heads, layers=num_layers, attn_dropout=attn_dropout,
                                 relu_dropout=ffn_dropout, res_dropout=dropout, embed_dropout=embed_dropout,
                                 attn_mask=attn_mask)
