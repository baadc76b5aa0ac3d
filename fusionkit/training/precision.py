"""Mixed precision: ``fp32``, ``bf16`` or ``fp16`` autocast around forward and loss.

Master weights, optimizer state, metrics and checkpoints always stay in fp32: autocast only lowers the
precision of the operations inside the forward (matmuls, attention), never the parameters. ``fp16`` also
scales the loss (:class:`torch.amp.GradScaler`) so that small gradients do not underflow; ``bf16`` has fp32's
exponent range and needs no scaling.
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
AUTO = "auto"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → ``bf16`` on a CUDA device that supports it, else ``fp32``; an explicit value is checked.

    Raises ``ValueError`` (before any work) for an unknown name, or ``bf16`` on a CUDA device without bf16.
    """
    if precision == AUTO:
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join((AUTO,) + PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision 'bf16' is not supported by {torch.cuda.get_device_name(device)}; "
                         f"use precision 'fp16' or 'fp32'")
    return precision


def autocast(precision: str, device: torch.device):
    """The autocast context for ``precision`` on ``device`` (a no-op context for ``fp32``)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for ``fp16``; ``None`` otherwise (bf16 and fp32 need none)."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def scaler_state(scaler: torch.amp.GradScaler | None) -> dict | None:
    """The scaler's state as plain JSON values (scale, growth tracker, hyperparameters)."""
    if scaler is None:
        return None
    return {k: (float(v) if isinstance(v, float) or k == "scale" else v) for k, v in scaler.state_dict().items()}


def backward_and_step(loss: torch.Tensor, model, optimizer, scaler, grad_clip: float) -> None:
    """Backward, clipping and the optimizer step; with an fp16 ``scaler`` the loss is scaled, the gradients
    unscaled before clipping, and a step with inf/NaN gradients skipped (the scaler lowers its scale)."""
    if scaler is None:
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
