"""The batch every fusionkit model consumes."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch


@dataclass
class MultimodalBatch:
    """A collated batch, word-piece aligned (MAG-BERT convention) and padded to the longest sequence.

    input_ids, attention_mask, token_type_ids: ``(B, T)``; ``attention_mask`` is bool, True = real token.
    acoustic: ``(B, T, d_a)``; visual: ``(B, T, d_v)`` — one row per word piece, zero rows at [CLS]/[SEP]/padding.
    label: ``(B,)`` float in [-3, 3], or ``None`` at inference.
    ids: segment ids, length B.
    acoustic_mask / visual_mask: ``(B, T_a)`` / ``(B, T_v)`` bool, only for *unaligned* nonverbal sequences
        (then acoustic/visual have their own lengths); ``None`` when aligned to the word pieces.
    acoustic / visual are ``None`` (with their masks) when the modality is absent (see ``modalities``).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    acoustic: torch.Tensor | None
    visual: torch.Tensor | None
    label: torch.Tensor | None = None
    ids: list = field(default_factory=list)
    acoustic_mask: torch.Tensor | None = None
    visual_mask: torch.Tensor | None = None

    @property
    def aligned(self) -> bool:
        return self.acoustic_mask is None and self.visual_mask is None

    @property
    def modalities(self) -> tuple:
        """Present modalities in ``("t", "a", "v")`` order."""
        return ("t",) + (("a",) if self.acoustic is not None else ()) + (("v",) if self.visual is not None else ())

    def require(self, modalities, *, model: str) -> None:
        """Refuse, with one ``ValueError``, a batch that lacks a modality ``model`` was built with (``modalities``:
        letters ``t``/``a``/``v``, any order; text is always required and may be left out)."""
        missing = [m for m in ("a", "v") if m in modalities and m not in self.modalities]
        if missing:
            names = {"a": "acoustic", "v": "visual"}
            built = ",".join(m for m in "tav" if m == "t" or m in modalities)
            raise ValueError(f"{model} was built with modalities {built} but "
                             f"the batch has no {' or '.join(names[m] for m in missing)} features; build it with "
                             f"modalities={','.join(self.modalities)}")

    @property
    def mask(self) -> torch.Tensor:
        return self.attention_mask.bool()

    @property
    def a_mask(self) -> torch.Tensor:
        """Mask of the acoustic sequence (the text mask when aligned)."""
        return self.mask if self.acoustic_mask is None else self.acoustic_mask

    @property
    def v_mask(self) -> torch.Tensor:
        return self.mask if self.visual_mask is None else self.visual_mask

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def pin_memory(self) -> "MultimodalBatch":
        """The batch with its tensors in page-locked memory (``DataLoader(pin_memory=True)`` calls this)."""
        pinned = {f.name: getattr(self, f.name).pin_memory() for f in fields(self)
                  if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **pinned)

    def to(self, device, non_blocking: bool = False) -> "MultimodalBatch":
        moved = {
            f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)
