"""AdamW with separate encoder / non-encoder learning rates, no decay on biases and norms, linear warm-up."""
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


def param_groups(model: nn.Module, *, lr: float, encoder_lr: float, weight_decay: float) -> list[dict]:
    """Up to four AdamW groups: (encoder | rest) × (decayed | not decayed).

    Biases and normalisation weights — every parameter with fewer than two dimensions — get no weight decay.
    Frozen parameters (``requires_grad=False``) are left out. Each group carries a ``name`` for logging.
    """
    enc = encoder_parameter_names(model)
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "encoder" if name in enc else "head"
        decay = p.ndim >= 2
        key = f"{part}{'' if decay else '_no_decay'}"
        if key not in groups:
            groups[key] = {"name": key, "params": [], "lr": encoder_lr if part == "encoder" else lr,
                           "weight_decay": weight_decay if decay else 0.0}
        groups[key]["params"].append(p)
    order = ("encoder", "encoder_no_decay", "head", "head_no_decay")
    return [groups[k] for k in order if k in groups]


def build_optimizer(model: nn.Module, *, lr: float, encoder_lr: float, weight_decay: float) -> torch.optim.AdamW:
    groups = param_groups(model, lr=lr, encoder_lr=encoder_lr, weight_decay=weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters; nothing to optimise")
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup: float):
    """Linear warm-up over ``warmup × total_steps`` steps, then linear decay to 0 (``transformers``)."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, int(warmup * total_steps), max(total_steps, 1))
