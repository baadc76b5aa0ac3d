import torch

# Unit tests use tiny models: one intra-op thread is faster than two for them, and keeps parallel runs fair.
torch.set_num_threads(1)

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need a CUDA device; without one they are skipped (benchmarks/gpu_check.sh runs them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run benchmarks/gpu_check.sh on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
