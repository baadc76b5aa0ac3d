"""MISA's blocks (Hazarika, Zimmermann, Poria, "MISA: Modality-Invariant and -Specific Representations for
Multimodal Sentiment Analysis", ACM MM 2020), following ``src/models.py`` of https://github.com/declare-lab/MISA.

* ``misa_sequence_encoder`` (adapter): the utterance encoder of the nonverbal streams — a bidirectional LSTM,
  LayerNorm, a second bidirectional LSTM, both run on packed sequences; the utterance vector concatenates the
  final states of both LSTMs, ``(B, 4 · d_hidden)`` (``extract_features`` + the concatenation in ``alignment``).
* ``misa_shared_private`` (adapter): per-modality projection (Linear → activation → LayerNorm) to ``hidden``,
  private encoders (Linear → sigmoid, one per modality), one shared encoder (Linear → sigmoid) and the
  reconstruction decoders (Linear) of ``private + shared``.
* ``misa_fusion`` (fusion): the 6-token fusion — a one-layer post-norm transformer over
  ``(private_t, private_v, private_a, shared_t, shared_v, shared_a)`` (2 heads, feed-forward 2048, dropout 0.1,
  ReLU: PyTorch's ``TransformerEncoderLayer`` defaults the authors use), the six outputs concatenated, then
  ``Linear(6h, 3h) → Dropout → activation → Linear(3h, d_out)``.
* :class:`ModalityDiscriminator`: the optional adversarial similarity objective (gradient reversal, then
  ``Linear → activation → Dropout → Linear(3)``), used instead of CMD when ``use_cmd_sim=False``.

The fusion transformer is built from fusionkit's shared :class:`~fusionkit.components.attention.Attention` core
and timm's ``Mlp`` (:mod:`fusionkit.components.mlp`); with the same weights it computes what
``nn.TransformerEncoderLayer`` computes.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from einops import rearrange
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fusionkit.components.attention import Attention, init_packed_in_proj_
from fusionkit.components.checks import check_dropout, check_positive
from fusionkit.components.mlp import Mlp
from fusionkit.registry import register

MODALITIES = ("t", "v", "a")  # the authors' order: text, visual, acoustic



@register("misa_sequence_encoder", kind="adapter")
class MISASequenceEncoder(nn.Module):
    """``BiLSTM → LayerNorm → BiLSTM`` on packed sequences; the utterance vector is
    ``[h1_fwd; h2_fwd; h1_bwd; h2_bwd]`` of the final states, ``(B, 4 · d_hidden)``.

    ``d_hidden`` defaults to ``d_in`` (MISA uses each modality's input size as its LSTM size).
    """

    def __init__(self, *, d_in: int, d_hidden: int | None = None) -> None:
        super().__init__()
        d_hidden = d_in if d_hidden is None else d_hidden
        check_positive(d_in=d_in, d_hidden=d_hidden)
        self.d_in, self.d_hidden = d_in, d_hidden
        self.rnn1 = nn.LSTM(d_in, d_hidden, bidirectional=True, batch_first=True)
        self.rnn2 = nn.LSTM(2 * d_hidden, d_hidden, bidirectional=True, batch_first=True)
        self.layer_norm = nn.LayerNorm(2 * d_hidden)
        for name, param in self.named_parameters():
            if "weight_hh" in name:  # the authors' solver initialises every recurrent weight orthogonally
                nn.init.orthogonal_(param)

    @property
    def out_dim(self) -> int:
        return 4 * self.d_hidden

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            x: ``(B, T, d_in)`` sequence.
            mask: ``(B, T)`` bool, True = real step; real steps must come first (right padding). ``None``: all real.
        Returns:
            ``(B, 4 · d_hidden)``; padding never reaches the LSTMs (packed sequences).
        """
        if x.dim() != 3 or x.shape[-1] != self.d_in:
            raise ValueError(f"misa_sequence_encoder was built for (B, T, {self.d_in}) sequences, got {tuple(x.shape)}")
        if mask is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        else:
            lengths = mask.sum(dim=1).cpu()
        if (lengths < 1).any():
            raise ValueError(
                "misa_sequence_encoder got a sample with no real time step (mask all False); drop it or give it "
                "at least one (zero) frame"
            )
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        packed_h1, (final_h1, _) = self.rnn1(packed)
        padded_h1, _ = pad_packed_sequence(packed_h1, batch_first=True, total_length=x.shape[1])
        normed = pack_padded_sequence(self.layer_norm(padded_h1), lengths, batch_first=True, enforce_sorted=False)
        _, (final_h2, _) = self.rnn2(normed)
        return rearrange(torch.cat([final_h1, final_h2], dim=-1), "dir b d -> b (dir d)")


class SharedPrivateOutput(NamedTuple):
    """Each field is a ``(t, v, a)`` tuple of ``(B, hidden)`` tensors.

    projected: the modality vectors after projection (the reconstruction targets, MISA's ``utt_*_orig``).
    private / shared: the private and shared representations.
    recon: the reconstructions of ``projected`` from ``private + shared``.
    """

    projected: tuple
    private: tuple
    shared: tuple
    recon: tuple


@register("misa_shared_private", kind="adapter")
class MISASharedPrivate(nn.Module):
    """Projection to a common size, modality-private and shared (common) encoders, reconstruction decoders.

    Args:
        d_text, d_visual, d_acoustic: sizes of the three utterance vectors.
        hidden: common size (MISA: 128).
        activation: module class of the projections (MISA: ReLU).
        modalities: the present ones, a subset of ``("t", "v", "a")`` with ``t``; an absent modality has no
            projection, private encoder or decoder (its size is then ignored).
    """

    def __init__(
        self,
        *,
        d_text: int,
        d_visual: int,
        d_acoustic: int,
        hidden: int = 128,
        activation: type[nn.Module] = nn.ReLU,
        modalities: tuple[str, ...] = MODALITIES,
    ) -> None:
        super().__init__()
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        if "t" not in self.modalities or set(modalities) - set(MODALITIES):
            raise ValueError(f"modalities must be a subset of {MODALITIES} with 't', got {modalities}")
        sizes = dict(zip(MODALITIES, (d_text, d_visual, d_acoustic)))
        check_positive(hidden=hidden, **{f"d_{dict(t='text', v='visual', a='acoustic')[m]}": sizes[m]
                                         for m in self.modalities})
        self.hidden = hidden

        def project(d_in: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(d_in, hidden), activation(), nn.LayerNorm(hidden))

        def code() -> nn.Sequential:
            return nn.Sequential(nn.Linear(hidden, hidden), nn.Sigmoid())

        self.project = nn.ModuleDict({m: project(sizes[m]) for m in self.modalities})
        self.private = nn.ModuleDict({m: code() for m in self.modalities})
        self.shared = code()
        self.recon = nn.ModuleDict({m: nn.Linear(hidden, hidden) for m in self.modalities})

    def forward(self, text: torch.Tensor, visual: torch.Tensor | None,
                acoustic: torch.Tensor | None) -> SharedPrivateOutput:
        """``text (B, d_text)``, ``visual (B, d_visual)``, ``acoustic (B, d_acoustic)`` utterance vectors (``None``
        for an absent modality) → :class:`SharedPrivateOutput` of ``(B, hidden)`` tensors in the order
        ``(t, v, a)``, present modalities only."""
        inputs = dict(zip(MODALITIES, (text, visual, acoustic)))
        projected = tuple(self.project[m](inputs[m]) for m in self.modalities)
        private = tuple(self.private[m](u) for m, u in zip(self.modalities, projected))
        shared = tuple(self.shared(u) for u in projected)
        recon = tuple(self.recon[m](p + s) for m, p, s in zip(self.modalities, private, shared))
        return SharedPrivateOutput(projected=projected, private=private, shared=shared, recon=recon)


class PostNormTransformerLayer(nn.Module):
    """``x ← LN(x + Drop(SelfAttn(x)))``, ``x ← LN(x + Drop(FFN(x)))`` (``nn.TransformerEncoderLayer``'s
    default post-norm order, ReLU FFN), on fusionkit's attention core, initialised as that layer: Xavier-uniform
    packed input projection, zero input/output projection biases, ``nn.Linear`` defaults elsewhere."""

    def __init__(self, *, dim: int, heads: int = 2, ffn_dim: int = 2048, dropout: float = 0.1) -> None:
        super().__init__()
        check_positive(ffn_dim=ffn_dim)
        check_dropout(dropout=dropout)
        self.attn = Attention(dim=dim, heads=heads, dropout=dropout)
        init_packed_in_proj_(self.attn, xavier_out=False)  # nn.MultiheadAttention._reset_parameters
        self.drop = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = Mlp(in_features=dim, hidden_features=ffn_dim, act_layer=nn.ReLU, drop=dropout)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, N, dim)`` tokens (all real) → ``(B, N, dim)``."""
        x = self.norm1(x + self.drop(self.attn(x)))
        return self.norm2(x + self.ffn(x))


class MISAFusionOutput(NamedTuple):
    """prediction: ``(B, d_out)``; fused: ``(B, 6 · hidden)`` concatenated transformer outputs."""

    prediction: torch.Tensor
    fused: torch.Tensor


@register("misa_fusion", kind="fusion")
class MISAFusion(nn.Module):
    """MISA's fusion: one transformer layer over the six private/shared vectors, concatenation, 2-layer MLP.

    Args:
        hidden: size of each of the six vectors (MISA: 128).
        d_out: output size (1 for regression).
        heads, ffn_dim, attn_dropout: the transformer layer (MISA: PyTorch's defaults 2 heads given, 2048, 0.1).
        dropout: dropout of the fusion MLP (MISA: 0.5).
        activation: module class of the fusion MLP (MISA: ReLU).
        num_modalities: present modalities (MISA: 3); the transformer sees a private and a shared token of each.
    """

    def __init__(
        self,
        *,
        hidden: int = 128,
        d_out: int = 1,
        heads: int = 2,
        ffn_dim: int = 2048,
        attn_dropout: float = 0.1,
        dropout: float = 0.5,
        activation: type[nn.Module] = nn.ReLU,
        num_modalities: int = len(MODALITIES),
    ) -> None:
        super().__init__()
        check_positive(hidden=hidden, d_out=d_out, num_modalities=num_modalities)
        check_dropout(dropout=dropout)
        self.num_modalities = num_modalities
        self.num_tokens = 2 * num_modalities
        self.transformer = PostNormTransformerLayer(dim=hidden, heads=heads, ffn_dim=ffn_dim, dropout=attn_dropout)
        width = self.num_tokens * hidden
        self.fusion = nn.Sequential(
            nn.Linear(width, width // 2), nn.Dropout(dropout), activation(), nn.Linear(width // 2, d_out)
        )

    def forward(self, private: tuple, shared: tuple) -> MISAFusionOutput:
        """
        Args:
            private, shared: ``(t, v, a)`` tuples of ``(B, hidden)`` tensors (present modalities only).
        Returns:
            :class:`MISAFusionOutput` (``prediction (B, d_out)``, ``fused (B, 2 · num_modalities · hidden)``).
        """
        if len(private) != self.num_modalities or len(shared) != self.num_modalities:
            raise ValueError(f"misa_fusion was built for {self.num_modalities} private and shared vectors (t, v, a "
                             f"order), got {len(private)} and {len(shared)}")
        tokens = torch.stack([*private, *shared], dim=1)
        fused = rearrange(self.transformer(tokens), "b n d -> b (n d)")
        return MISAFusionOutput(prediction=self.fusion(fused), fused=fused)


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.neg() * ctx.weight, None


def reverse_gradient(x: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """Identity forward; multiplies the gradient by ``-weight`` backward (domain-adversarial training)."""
    return _ReverseGradient.apply(x, weight)


class ModalityDiscriminator(nn.Module):
    """Predicts which modality a shared vector came from, through a gradient-reversal layer (MISA's adversarial
    alternative to CMD): ``Linear → activation → Dropout → Linear(num_modalities)``."""

    def __init__(
        self,
        *,
        hidden: int = 128,
        dropout: float = 0.5,
        reverse_grad_weight: float = 1.0,
        activation: type[nn.Module] = nn.ReLU,
        num_modalities: int = len(MODALITIES),
    ) -> None:
        super().__init__()
        check_positive(hidden=hidden, num_modalities=num_modalities)
        self.reverse_grad_weight = reverse_grad_weight
        self.net = nn.Sequential(
            nn.Linear(hidden, hidden), activation(), nn.Dropout(dropout), nn.Linear(hidden, num_modalities)
        )

    def forward(self, shared: torch.Tensor) -> torch.Tensor:
        """``shared``: ``(B, hidden)`` → modality logits ``(B, num_modalities)``."""
        return self.net(reverse_gradient(shared, self.reverse_grad_weight))
