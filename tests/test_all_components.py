"""Every registered component builds with small dims, runs forward and backward, and yields no NaN."""
from __future__ import annotations

import importlib

import pytest
import torch

import fusionkit

EXAMPLE_MODULES = ("examples_core", "examples_baselines")


def _examples() -> dict:
    merged: dict = {}
    for name in EXAMPLE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        clash = set(merged) & set(module.EXAMPLES)
        assert not clash, f"components with two examples: {sorted(clash)}"
        merged.update(module.EXAMPLES)
    return merged


EXAMPLES = _examples()


def _float_tensors(out):
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        return [t for v in out.values() for t in _float_tensors(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _float_tensors(v)]
    return []


def test_every_component_has_an_example():
    missing = sorted(set(fusionkit.list_components()) - set(EXAMPLES))
    assert not missing, f"registered components without an example in tests/examples_*.py: {missing}"


@pytest.mark.parametrize("name", fusionkit.list_components())
def test_forward_backward_no_nan(name):
    example = EXAMPLES.get(name)
    if example is None:
        pytest.fail(f"no example for {name!r}")
    torch.manual_seed(0)
    module = example["build"]()
    out = example["run"](module)
    tensors = _float_tensors(out)
    assert tensors, f"{name}: forward returned no floating tensor"
    for t in tensors:
        assert torch.isfinite(t).all(), f"{name}: non-finite output"
    total = sum(t.sum() for t in tensors if t.requires_grad)
    if not isinstance(module, torch.nn.Module) or not any(p.requires_grad for p in module.parameters()):
        return
    assert isinstance(total, torch.Tensor), f"{name}: no output carries a graph"
    total.backward()
    skip = tuple(example.get("no_grad", ()))
    for pname, p in module.named_parameters():
        if not p.requires_grad or pname.startswith(skip):
            continue
        assert p.grad is not None, f"{name}: parameter {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"
