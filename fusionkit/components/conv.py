"""Convolutional encoders of ICCN (Sun et al., AAAI 2020): ``iccn_product_cnn``, the authors' CNN over a
text-based product (model ``iccn``), and ``temporal_conv`` over word sequences and ``outer_product_cnn`` over the
averaged word-level products (model ``iccn_e2e``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusionkit.components.checks import check_dropout, check_positive
from fusionkit.registry import register


@register("temporal_conv", kind="adapter")
class TemporalConv(nn.Module):
    """1-D convolution over time, ``(B, T, d_in) → (B, T, d_out)``, "same" length, then ReLU.

    Padded steps are zeroed before the convolution and in the output, so a real step's output does not
    depend on the amount of padding (a real neighbour that is absent and a padded one both read as zero).
    """

    def __init__(self, *, d_in: int, d_out: int, kernel_size: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        check_positive(d_in=d_in, d_out=d_out, kernel_size=kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"temporal_conv keeps the sequence length: kernel_size must be odd, got {kernel_size}")
        check_dropout(dropout=dropout)
        self.d_in, self.d_out = d_in, d_out
        self.conv = nn.Conv1d(d_in, d_out, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x (B, T, d_in)``; ``mask (B, T)`` bool, True = real token → ``(B, T, d_out)``, zero at padding."""
        if x.dim() != 3 or x.shape[-1] != self.d_in:
            raise ValueError(f"temporal_conv was built for (B, T, {self.d_in}) inputs, got {tuple(x.shape)}")
        keep = mask.unsqueeze(-1).to(x.dtype)
        y = self.conv((x * keep).transpose(1, 2)).transpose(1, 2)
        return self.dropout(F.relu(y)) * keep


@register("outer_product_cnn", kind="adapter")
class OuterProductCNN(nn.Module):
    """2-D CNN over a ``(B, H, W)`` matrix → ``(B, d_out)``: per stage ``Conv2d(k, same) → ReLU → MaxPool(2)``,
    then flatten → Dropout → Linear.

    ``channels`` gives the output channels of each stage (the input has one); ``height`` × ``width`` is the
    matrix size (``d_text × d_audio`` for ICCN), each halved (floor) by every stage.
    """

    def __init__(self, *, height: int, width: int, d_out: int, channels: tuple[int, ...] = (8, 16),
                 kernel_size: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        check_positive(height=height, width=width, d_out=d_out, kernel_size=kernel_size)
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) <= 0:
            raise ValueError(f"outer_product_cnn needs at least one positive channel count, got channels={channels}")
        if kernel_size % 2 == 0:
            raise ValueError(f"outer_product_cnn uses 'same' convolutions: kernel_size must be odd, got {kernel_size}")
        check_dropout(dropout=dropout)
        h, w = height, width
        for _ in channels:
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(
                f"outer_product_cnn: a {height}×{width} matrix is too small for {len(channels)} pooling stages; "
                f"use fewer channels entries or larger sizes"
            )
        self.height, self.width = height, width
        stages = []
        c_in = 1
        for c_out in channels:
            stages += [nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(c_in * h * w, d_out)

    def forward(self, matrix: torch.Tensor) -> torch.Tensor:
        """``matrix (B, height, width)`` → ``(B, d_out)``."""
        if matrix.dim() != 3 or matrix.shape[1:] != (self.height, self.width):
            raise ValueError(
                f"outer_product_cnn was built for (B, {self.height}, {self.width}) matrices, got {tuple(matrix.shape)}"
            )
        y = self.stages(matrix.unsqueeze(1))
        return self.proj(self.dropout(y.flatten(1)))


def strided_cnn_flatten_size(height: int, width: int, *, channels: int = 3, stages: int = 2) -> int:
    """Flattened size after ``stages`` × ``Conv2d(3×3, stride 2, padding 1) → MaxPool(2, stride 1)``.

    Per stage a side ``n`` becomes ``⌊(n − 1) / 2⌋ + 1`` (the convolution), then one less (the pooling). For the
    ICCN authors' inputs: 768 × 50 → 3 · 191 · 11 = 6303, 768 × 74 → 9741, 768 × 35 → 4584 (their ``fc_dim``).
    """
    h, w = height, width
    for _ in range(stages):
        h, w = (h - 1) // 2 + 1 - 1, (w - 1) // 2 + 1 - 1
    if h < 1 or w < 1:
        raise ValueError(f"iccn_product_cnn: a {height}×{width} matrix is too small for {stages} stages of stride-2 "
                         f"convolution and 2×2 pooling; each side must stay ≥ 1 (use sides ≥ {2 ** stages + 1})")
    return channels * h * w


@register("iccn_product_cnn", kind="adapter")
class StridedProductCNN(nn.Module):
    """The ICCN authors' CNN on one text-based product ``(B, H, W)`` → ``(B, d_out)``.

    Per stage ``Conv2d(c_in → channels, 3×3, stride 2, padding 1) → BatchNorm2d → ReLU → MaxPool2d(2, stride 1)``
    (two stages, 3 channels, as in their ``ConvNet`` / ``MY``), then flatten → ``Linear(fc_dim → d_out)``;
    ``fc_dim`` is derived from ``height × width`` (:func:`strided_cnn_flatten_size`), not given. PyTorch's
    default initialisation (their code sets none).
    """

    def __init__(self, *, height: int, width: int, d_out: int, channels: int = 3, stages: int = 2) -> None:
        super().__init__()
        check_positive(height=height, width=width, d_out=d_out, channels=channels, stages=stages)
        self.height, self.width = height, width
        self.fc_dim = strided_cnn_flatten_size(height, width, channels=channels, stages=stages)
        layers: list[nn.Module] = []
        c_in = 1
        for _ in range(stages):
            layers += [nn.Conv2d(c_in, channels, kernel_size=3, stride=2, padding=1), nn.BatchNorm2d(channels),
                       nn.ReLU(), nn.MaxPool2d(kernel_size=2, stride=1)]
            c_in = channels
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(self.fc_dim, d_out)

    def forward(self, matrix: torch.Tensor) -> torch.Tensor:
        """``matrix (B, height, width)`` → ``(B, d_out)``."""
        if matrix.dim() != 3 or matrix.shape[1:] != (self.height, self.width):
            raise ValueError(
                f"iccn_product_cnn was built for (B, {self.height}, {self.width}) matrices, got {tuple(matrix.shape)}"
            )
        return self.fc(self.layers(matrix.unsqueeze(1)).flatten(1))
