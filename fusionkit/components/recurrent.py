"""``lstm_sequence_encoder`` — a unidirectional LSTM over a padded sequence, returning every step; and
``projected_lstm`` — the ICCN authors' 1×1 projection then LSTM, returning the last hidden state."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fusionkit.components.checks import check_positive
from fusionkit.registry import register


@register("lstm_sequence_encoder", kind="adapter")
class LSTMSequenceEncoder(nn.Module):
    """``LSTM(d_in → d_hidden)`` on packed sequences: ``(B, T, d_in) → (B, T, d_hidden)``, zero at padding.

    Right-padded masks are expected (real steps first); packing makes the states independent of the padding.
    """

    def __init__(self, *, d_in: int, d_hidden: int, num_layers: int = 1) -> None:
        super().__init__()
        check_positive(d_in=d_in, d_hidden=d_hidden, num_layers=num_layers)
        self.d_in, self.d_hidden = d_in, d_hidden
        self.rnn = nn.LSTM(d_in, d_hidden, num_layers=num_layers, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x (B, T, d_in)``; ``mask (B, T)`` bool, True = real token → ``(B, T, d_hidden)``."""
        if x.dim() != 3 or x.shape[-1] != self.d_in:
            raise ValueError(f"lstm_sequence_encoder was built for (B, T, {self.d_in}) inputs, got {tuple(x.shape)}")
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out * mask.unsqueeze(-1).to(out.dtype)


@register("projected_lstm", kind="adapter")
class ProjectedLSTM(nn.Module):
    """The ICCN authors' audio / video path: ``Conv1d(d_in → d_hidden, kernel 1, no bias)`` → one-layer
    unidirectional ``LSTM(d_hidden → d_hidden)`` → its last hidden state: ``(B, T, d_in) → (B, d_hidden)``.

    The authors run the LSTM over the padded arrays; here it runs on packed sequences (right padding, ``mask``
    True = real step), so the last hidden state is the one at the last real step and padding changes nothing.
    PyTorch's default initialisation (their code sets none).
    """

    def __init__(self, *, d_in: int, d_hidden: int) -> None:
        super().__init__()
        check_positive(d_in=d_in, d_hidden=d_hidden)
        self.d_in, self.d_hidden, self.out_dim = d_in, d_hidden, d_hidden
        self.proj = nn.Conv1d(d_in, d_hidden, kernel_size=1, padding=0, bias=False)
        self.rnn = nn.LSTM(d_hidden, d_hidden, num_layers=1, bidirectional=False, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x (B, T, d_in)``; ``mask (B, T)`` bool, True = real step (``None``: no padding) → ``(B, d_hidden)``."""
        if x.dim() != 3 or x.shape[-1] != self.d_in:
            raise ValueError(f"projected_lstm was built for (B, T, {self.d_in}) inputs, got {tuple(x.shape)}")
        projected = self.proj(x.transpose(1, 2)).transpose(1, 2)
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(projected, lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.rnn(packed)
        return h_n[-1]
