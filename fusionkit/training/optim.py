"""AdamW with separate encoder / non-encoder learning rates, no decay on biases and norms, warm-up + schedule."""
from __future__ import annotations

import torch
from torch import nn

from fusionkit.encoders.bert import BertEncoder


def encoder_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters inside ``model.encoder`` or inside any :class:`BertEncoder` submodule."""
    prefixes = [name for name, module in model.named_modules() if isinstance(module, BertEncoder)]
    if isinstance(getattr(model, "encoder", None), nn.Module):
        prefixes.append("encoder")
    names = set()
    for name, _ in model.named_parameters():
        if any(name == p or name.startswith(p + ".") if p else True for p in prefixes):
            names.add(name)
    return names


LR_SCALE_ATTR = "lr_scale"


def lr_scales(model: nn.Module) -> dict[str, float]:
    """``{parameter name: factor}`` for parameters inside a module that declares an ``lr_scale`` attribute (a
    block's own learning-rate multiplier, e.g. the restitution gate's; the innermost declaring module wins);
    parameters without one are absent (factor 1)."""
    scaled = {}
    for prefix, module in sorted(model.named_modules(), key=lambda item: len(item[0])):
        factor = getattr(module, LR_SCALE_ATTR, None)
        if factor is None:
            continue
        for name, _ in module.named_parameters():
            scaled[f"{prefix}.{name}" if prefix else name] = float(factor)
    return {name: factor for name, factor in scaled.items() if factor != 1.0}


def param_groups(model: nn.Module, *, lr: float, encoder_lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: (encoder | rest) × (decayed | not decayed), plus one group per learning-rate multiplier
    that a module declares (:func:`lr_scales`; named e.g. ``head_x100``).

    Biases and normalisation weights — every parameter with fewer than two dimensions — get no weight decay.
    Frozen parameters (``requires_grad=False``) are left out. Each group carries a ``name`` for logging.
    """
    enc = encoder_parameter_names(model)
    scales = lr_scales(model)
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "encoder" if name in enc else "head"
        decay = p.ndim >= 2
        factor = scales.get(name, 1.0)
        key = f"{part}{'' if decay else '_no_decay'}{'' if factor == 1.0 else f'_x{factor:g}'}"
        if key not in groups:
            groups[key] = {"name": key, "params": [], "lr": (encoder_lr if part == "encoder" else lr) * factor,
                           "weight_decay": weight_decay if decay else 0.0}
        groups[key]["params"].append(p)
    order = ("encoder", "encoder_no_decay", "head", "head_no_decay")
    return [groups[k] for k in order if k in groups] + [groups[k] for k in sorted(groups) if k not in order]


FUSED_DEVICES = ("cpu", "cuda")  # where torch's single-kernel AdamW runs


def fused_supported(params) -> bool:
    """True when every parameter is a floating-point tensor on a device with torch's fused AdamW kernel."""
    params = list(params)
    return bool(params) and all(p.is_floating_point() and p.device.type in FUSED_DEVICES for p in params)


def build_optimizer(
    model: nn.Module, *, lr: float, encoder_lr: float, weight_decay: float, fused: bool | None = None
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`.

    ``fused=None`` picks torch's fused kernel wherever it is supported: the same update as the default
    (``foreach``) implementation up to float rounding, in one pass over each parameter instead of about ten
    elementwise passes, and without a per-tensor Python loop — a MiniLM training step on 2 CPU cores is about
    1.24× faster with it (docs/performance.md).
    """
    groups = param_groups(model, lr=lr, encoder_lr=encoder_lr, weight_decay=weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters; nothing to optimise")
    if fused is None:
        fused = fused_supported(p for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused)


def build_scheduler(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup: float, schedule: str = "linear"):
    """Linear warm-up over ``warmup × total_steps`` steps, then (``transformers``' schedules) ``linear`` decay to
    0, a ``constant`` rate, or a ``cosine`` half period down to 0 at the last step."""
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    warmup_steps = int(warmup * total_steps)
    if schedule == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup_steps, max(total_steps, 1))
    if schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup_steps)
    if schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup_steps, max(total_steps, 1))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected linear, constant or cosine")
