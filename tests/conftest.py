import torch

# Unit tests use tiny models: one intra-op thread is faster than two for them, and keeps parallel runs fair.
torch.set_num_threads(1)

import pytest  # noqa: E402
from plugin_isolation import isolate  # noqa: E402

# Hermetic: third-party fusionkit plug-ins installed in this environment are invisible to the tests (in this
# process and, through FUSIONKIT_DISABLE_PLUGINS, in the subprocesses they start); fusionkit's own stay.
HIDDEN_PLUGINS = isolate()


def pytest_report_header(config):
    if HIDDEN_PLUGINS:
        return f"installed fusionkit plug-ins hidden from the tests: {', '.join(HIDDEN_PLUGINS)}"
    return None


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need a CUDA device; without one they are skipped (benchmarks/gpu_check.sh runs them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run benchmarks/gpu_check.sh on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """The tiny WordPiece tokenizer of ``data_fixtures`` (ids = positions in its vocabulary), once per module."""
    from data_fixtures import tiny_tokenizer

    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """``FUSIONKIT_CACHE`` inside the test's own ``tmp_path``: no tokenized splits are shared between tests."""
    monkeypatch.setenv("FUSIONKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def refusal(capsys):
    """``refusal(argv)``: run ``python -m benchmarks.run`` with ``argv``, which must exit 2 with exactly one
    ``error:`` line on stderr; returns that line."""
    import benchmarks.run as bench

    def run(argv) -> str:
        assert bench.main(argv) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, err
        return lines[0]

    return run
