"""Checkpoint files: safetensors for every tensor, JSON for everything else, each written atomically.

Layout of a run directory::

    last/state.json                 counters, history, config, optimizer hyperparameters, scheduler, RNG (JSON)
    last/model-<n>.safetensors      model weights of save number n
    last/optim-<n>.safetensors      optimizer moments and the torch / CUDA / NumPy RNG states
    best/model.safetensors          the weights selected on the validation split
    best/model.json                 how to rebuild the model (registry name, build kwargs, text model, dims)

``state.json`` is written last and names the tensor files it belongs to (with their sha256, and that of
``best/model.safetensors``), so a run killed in the middle of a save still finds a consistent previous
checkpoint. Every file has a checksum sidecar ``<file>.sha256`` (:mod:`fusionkit.training.integrity`). No
pickle is ever read or written.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors_bytes

from fusionkit.training.atomic import CheckpointError, atomic_write_bytes, read_json  # noqa: F401 - re-exported

FORMAT_VERSION = 1
MODEL_WEIGHTS = "model.safetensors"
MODEL_JSON = "model.json"


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_write_tensors(path: str | os.PathLike, tensors: dict, metadata: dict | None = None) -> str:
    """A safetensors checkpoint file with its checksum sidecar; returns its sha256."""
    from fusionkit.training.integrity import write_checked

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return write_checked(path, save_safetensors_bytes(tensors, metadata=metadata))


def write_checked_json(path: str | os.PathLike, obj) -> str:
    """A checkpoint JSON file with its checksum sidecar (:mod:`fusionkit.training.integrity`); returns its sha256."""
    from fusionkit.training.integrity import write_checked

    return write_checked(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


# -- model weights -----------------------------------------------------------------------------------------
def model_tensors(model: torch.nn.Module) -> tuple[dict, dict]:
    """``(tensors, aliases)``: the state dict with tensors sharing storage stored once (safetensors refuses
    shared storage); ``aliases`` maps each dropped name to the stored name."""
    tensors, aliases, seen = {}, {}, {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype) \
            if t.numel() else None
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        tensors[name] = t
    return tensors, aliases


def save_model_weights(model: torch.nn.Module, path: str | os.PathLike) -> str:
    """Write the model's weights (checked, see :func:`atomic_write_tensors`); returns the file's sha256."""
    tensors, aliases = model_tensors(model)
    return atomic_write_tensors(path, tensors, metadata={"aliases": json.dumps(aliases, sort_keys=True)})


def read_model_weights(path: str | os.PathLike, *, verify: bool = True) -> dict:
    """The full state dict stored at ``path`` (aliases re-expanded), after checking its checksum."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model weights {str(path)!r} not found")
    if verify:
        from fusionkit.training.integrity import verify as verify_checksum

        verify_checksum(path)
    try:
        weights = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        for alias, target in json.loads(meta.get("aliases", "{}")).items():
            weights[alias] = weights[target]
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise CheckpointError(f"cannot read model weights {str(path)!r}: {type(e).__name__}: {e}") from None
    return weights


def load_model_weights(model: torch.nn.Module, path: str | os.PathLike, *, what: str = "") -> None:
    """Load ``path`` into ``model`` after checking that names and shapes match exactly."""
    weights = read_model_weights(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    shapes = sorted(f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(expected[k].shape)}"
                    for k in set(weights) & set(expected) if weights[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        def few(items):
            return ", ".join(items[:5]) + (f" … (+{len(items) - 5})" if len(items) > 5 else "")

        parts = [f"missing {len(missing)} tensors ({few(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected tensors ({few(unexpected)})" if unexpected else "",
                 f"{len(shapes)} shape mismatches ({few(shapes)})" if shapes else ""]
        raise CheckpointError(
            f"the weights in {str(path)!r} do not match the model {what}: "
            + "; ".join(p for p in parts if p)
            + ". The checkpoint was written by a different model or configuration; rebuild the model with the "
              "settings it was trained with (its model.json)"
        )
    model.load_state_dict(weights, strict=True)


# -- optimizer and RNG -------------------------------------------------------------------------------------
def split_optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """``(tensors, json_part)`` of ``optimizer.state_dict()``."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def merge_optimizer_state(tensors: dict, json_part: dict) -> dict:
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, scalars in json_part["scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    return {"state": state, "param_groups": json_part["param_groups"]}


def capture_rng() -> tuple[dict, dict]:
    """``(tensors, json_part)`` holding the Python, NumPy, torch and CUDA generator states."""
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy": torch.from_numpy(np_keys.astype(np.int64))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    json_part = {"python": [version, list(mt), gauss], "numpy": [np_name, int(np_pos), int(np_has_gauss), float(np_gauss)]}
    return tensors, json_part


def restore_rng(tensors: dict, json_part: dict) -> None:
    version, mt, gauss = json_part["python"]
    random.setstate((version, tuple(mt), gauss))
    np_name, np_pos, np_has_gauss, np_gauss = json_part["numpy"]
    np.random.set_state((np_name, tensors["rng.numpy"].numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def load_tensor_file(path: str | os.PathLike, *, verify: bool = True) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} is missing; the checkpoint is incomplete")
    if verify:
        from fusionkit.training.integrity import verify as verify_checksum

        verify_checksum(path)
    try:
        return load_safetensors_bytes(path.read_bytes())
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot read {str(path)!r}: {e}") from None
