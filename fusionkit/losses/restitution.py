"""The restitution loss of MHMF-BERT (eq. 15–17): a triplet loss that pushes ``G̃ + R+`` to separate
sentiment classes better than ``G̃`` and ``G̃ + R−`` to separate them worse.

With the distance ``d(x, y) = 0.5 − cos(x, y) / 2`` (in [0, 1]) on masked-mean-pooled vectors of
``F = G̃``, ``F+ = G̃ + R+`` and ``F− = G̃ + R−``, and a triplet (anchor a, positive p, negative n)::

    L+ = softplus(d(F+a, F+p) − d(Fa, Fp)) + softplus(d(Fa, Fn) − d(F+a, F+n))
    L− = softplus(d(Fa, Fp) − d(F−a, F−p)) + softplus(d(F−a, F−n) − d(Fa, Fn))
    L  = L+ + L−

Triplets are drawn inside the batch: the positive shares the anchor's sentiment class, the negative has another.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fusionkit.components.attention import masked_mean
from fusionkit.registry import register

CLASS_SCHEMES = ("polarity", "acc7")
ACC7_RANGE = 3.0  # CMU-MOSI/MOSEI labels lie in [-3, 3]


class RestitutionLossOutput(NamedTuple):
    """total = plus + minus; each a scalar (mean over the drawn triplets).

    margins: ``(3,)`` detached expected triplet margins ``E[d(F_a, F_n) − d(F_a, F_p)]`` of ``F``, ``F+``, ``F−``
    (:func:`expected_margins`), or ``None`` when the batch has no valid triplet.
    """

    total: torch.Tensor
    plus: torch.Tensor
    minus: torch.Tensor
    margins: torch.Tensor | None = None


class Triplets(NamedTuple):
    """Batch indices ``(K,)`` of anchors, positives and negatives."""

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor


def cosine_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``d(x, y) = 0.5 − cos(x, y) / 2`` over the last axis: ``(..., d) × (..., d) → (...)``, values in [0, 1]."""
    return 0.5 - F.cosine_similarity(x, y, dim=-1) / 2


def sentiment_classes(labels: torch.Tensor, scheme: str = "polarity") -> torch.Tensor:
    """``(B,)`` float labels → ``(B,)`` integer classes.

    ``polarity``: 1 for ``label ≥ 0`` (neutral counts as positive, the usual non-negative/negative split of
    CMU-MOSI Acc-2), 0 for ``label < 0``. ``acc7``: ``round(clip(label, −3, 3))`` (``torch.round``, half to
    even, as ``numpy.round`` in the standard Acc-7 metric).
    """
    if scheme == "polarity":
        return (labels >= 0).long()
    if scheme == "acc7":
        return torch.round(labels.clamp(-ACC7_RANGE, ACC7_RANGE)).long()
    raise ValueError(f"unknown class scheme {scheme!r}; expected one of {', '.join(CLASS_SCHEMES)}")


def sample_triplets(
    classes: torch.Tensor, generator: torch.Generator, num_triplets: int | None = None
) -> Triplets:
    """Draw triplets inside a batch.

    Every sample that has at least one other sample of its class and one sample of another class is a valid
    anchor; its positive and negative are drawn uniformly among those. ``num_triplets=None`` keeps every valid
    anchor; an integer ``k`` keeps ``min(k, #valid)`` anchors drawn without replacement (the paper: ``k = 1``).

    Args:
        classes: ``(B,)`` integer classes.
        generator: a CPU ``torch.Generator`` (seeded by the caller for reproducibility).
    Returns:
        :class:`Triplets` of CPU index tensors ``(K,)``; ``K = 0`` when the batch has no valid triplet.
    """
    classes = classes.detach().cpu()
    batch = classes.shape[0]
    same = classes[:, None] == classes[None, :]
    positive_ok = same & ~torch.eye(batch, dtype=torch.bool)
    negative_ok = ~same
    anchors = torch.nonzero(positive_ok.any(1) & negative_ok.any(1)).flatten()
    if num_triplets is not None and anchors.numel() > num_triplets:
        anchors = anchors[torch.randperm(anchors.numel(), generator=generator)[:num_triplets]]
    # a uniform draw among the allowed columns = argmax of uniform scores over them
    scores = torch.rand(2, anchors.numel(), batch, generator=generator)
    positive = scores[0].masked_fill(~positive_ok[anchors], -1.0).argmax(dim=1)
    negative = scores[1].masked_fill(~negative_ok[anchors], -1.0).argmax(dim=1)
    return Triplets(anchor=anchors, positive=positive, negative=negative)


def triplet_terms(
    f: torch.Tensor, f_plus: torch.Tensor, f_minus: torch.Tensor, triplets: Triplets
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-triplet ``(L+, L−)`` of eq. 15–16 from pooled vectors ``f, f_plus, f_minus (B, d)`` → ``(K,), (K,)``.

    The three views are stacked and gathered once, so the six distances are two batched calls (the loss runs
    four times per training step of ``mhmf``).
    """
    views = torch.stack([f, f_plus, f_minus])  # (3, B, d)
    anchor, positive, negative = (views[:, index] for index in triplets)  # (3, K, d) each
    d_ap = cosine_distance(anchor, positive)  # (3, K): rows F, F+, F−
    d_an = cosine_distance(anchor, negative)
    plus = F.softplus(d_ap[1] - d_ap[0]) + F.softplus(d_an[0] - d_an[1])
    minus = F.softplus(d_ap[0] - d_ap[2]) + F.softplus(d_an[2] - d_an[0])
    return plus, minus


def expected_margins(views: torch.Tensor, classes: torch.Tensor) -> torch.Tensor | None:
    """Expected triplet margin ``E[d(v_a, v_n) − d(v_a, v_p)]`` of each view, over the triplets
    :func:`sample_triplets` draws from (every valid anchor, uniform positive and negative), computed exactly from
    the pairwise distances instead of by sampling — a deterministic diagnostic of how well a view separates the
    classes (positive: same-class samples are closer than other-class ones).

    Args:
        views: ``(V, B, d)`` pooled vectors (e.g. ``F``, ``F+``, ``F−`` stacked).
        classes: ``(B,)`` integer classes.
    Returns:
        ``(V,)`` margins in ``[−1, 1]``, or ``None`` when the batch has no valid anchor.
    """
    classes = classes.to(views.device)
    unit = F.normalize(views.detach().float(), dim=-1)
    distance = 0.5 - unit @ unit.transpose(1, 2) / 2  # (V, B, B)
    same = classes[:, None] == classes[None, :]
    positive = same & ~torch.eye(classes.shape[0], dtype=torch.bool, device=views.device)
    negative = ~same
    valid = positive.any(1) & negative.any(1)
    if not bool(valid.any()):
        return None
    mean_pos = (distance * positive).sum(-1) / positive.sum(-1).clamp(min=1)
    mean_neg = (distance * negative).sum(-1) / negative.sum(-1).clamp(min=1)
    return (mean_neg - mean_pos)[:, valid].mean(-1)


@register("restitution_loss", kind="loss")
class RestitutionLoss(nn.Module):
    """Triplet restitution loss ``L = L+ + L−`` (eq. 15–17), averaged over in-batch triplets.

    Args:
        classes: sentiment classes for the triplets: ``"polarity"`` (default; ``label ≥ 0`` vs ``< 0``) or
            ``"acc7"`` (``round(clip(label, −3, 3))``).
        num_triplets: ``None`` (default) uses every valid anchor; ``1`` draws a single triplet as in the paper.
        seed: seed of the loss's own ``torch.Generator`` (the draws advance it from call to call).
    """

    def __init__(self, *, classes: str = "polarity", num_triplets: int | None = None, seed: int = 0) -> None:
        super().__init__()
        if classes not in CLASS_SCHEMES:
            raise ValueError(f"unknown class scheme {classes!r}; expected one of {', '.join(CLASS_SCHEMES)}")
        if num_triplets is not None and num_triplets <= 0:
            raise ValueError(f"num_triplets must be positive or None (all anchors), got {num_triplets}")
        self.classes = classes
        self.num_triplets = num_triplets
        self.generator = torch.Generator().manual_seed(seed)

    def forward(
        self,
        g_tilde: torch.Tensor,
        relevant: torch.Tensor,
        irrelevant: torch.Tensor,
        labels: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> RestitutionLossOutput:
        """
        Args:
            g_tilde: ``(B, T, d)`` memory ``G̃``.
            relevant: ``(B, T, d)`` ``R+``.
            irrelevant: ``(B, T, d)`` ``R−``.
            labels: ``(B,)`` float sentiment scores.
            mask: ``(B, T)`` bool, True = real token (pooling runs over real tokens only).
        Returns:
            :class:`RestitutionLossOutput` of scalars. A batch without a valid triplet (e.g. one class only)
            gives zeros that still carry a graph.
        """
        f, f_plus, f_minus = self.pooled_views(g_tilde, relevant, irrelevant, mask)
        classes = sentiment_classes(labels, self.classes)
        triplets = sample_triplets(classes, self.generator, self.num_triplets)
        if triplets.anchor.numel() == 0:
            zero = 0 * (f.sum() + f_plus.sum() + f_minus.sum())
            return RestitutionLossOutput(total=zero, plus=zero, minus=zero)
        margins = expected_margins(torch.stack([f, f_plus, f_minus]), classes)
        triplets = Triplets(*(t.to(f.device) for t in triplets))
        plus, minus = triplet_terms(f, f_plus, f_minus, triplets)
        plus, minus = plus.mean(), minus.mean()
        return RestitutionLossOutput(total=plus + minus, plus=plus, minus=minus, margins=margins)

    @staticmethod
    def pooled_views(
        g_tilde: torch.Tensor, relevant: torch.Tensor, irrelevant: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masked-mean pooled ``F = G̃``, ``F+ = G̃ + R+``, ``F− = G̃ + R−``: ``(B, T, d)`` ×3 → ``(B, d)`` ×3."""
        f, mean_plus, mean_minus = masked_mean(torch.cat([g_tilde, relevant, irrelevant], dim=-1), mask).chunk(3, dim=-1)
        return f, f + mean_plus, f + mean_minus
