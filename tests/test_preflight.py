"""Every option of every registered model is checked before anything is trained or written.

The property test drives the real command line (``benchmarks.run.main``) with generated wrong types and
out-of-range values for each factory option and each training setting, always for all registered models at
once, and asserts exit 2, one ``error:`` line naming the model and the option, and an ``--out`` never created.
"""
from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import benchmarks.run as bench
from benchmarks.preflight import _hints, check_option, describe, matches
from fusionkit.training.build import model_spec

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["--dataset", "synthetic", "--seeds", "1", "--epochs", "1", "--batch-size", "8", "--max-samples", "16",
         "--tiny-bert", "--quiet", "--threads", "1"]
WORDS = st.sampled_from(["abc", "x1", "large", "none", "1e", "[1,"])


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FUSIONKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _options() -> list[tuple[str, str, object, object]]:
    """``(model, option, annotation, default)`` for every annotated option a user may ``--set``."""
    out = []
    for model in bench._registered_models():
        factory = model_spec(model).factory
        hints = _hints(factory)
        for name, p in inspect.signature(factory).parameters.items():
            if name in bench.RESERVED_MODEL_OPTIONS or name not in hints or name in bench.SETTABLE:
                continue
            if matches(p.default, hints[name]) is None and p.default is not None:
                continue  # an annotation the checks do not understand (e.g. a block object)
            out.append((model, name, hints[name], None if p.default is inspect.Parameter.empty else p.default))
    return out


OPTIONS = _options()


def _json(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _wrong(hint, name: str, default):
    """A strategy of ``--set`` value texts that are wrong for ``hint`` (type) or out of range."""
    ints_low = 1 if default is None or (isinstance(default, int) and default >= 1) else 0
    numbers = st.one_of(WORDS, st.just("[1, 2]"), st.just('{"a": 1}'), st.just("true"))
    if matches([0.1], hint) is True and matches(0.1, hint) is True:  # a float or a list of floats
        return st.one_of(WORDS, st.just("[-1.0, 0.1]"), st.just("[0.1, 0.1, 0.1, 0.1, 0.1]"), st.just("-0.5"),
                         st.just("NaN"))
    if matches(1.5, hint) is True and matches(1, hint) is True and matches("a", hint) is not True:  # float
        bad = st.one_of(numbers, st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        if "dropout" in name:
            return st.one_of(bad, st.floats(1.0, 1e6).map(repr), st.floats(-1e6, -1e-3).map(repr))
        return st.one_of(bad, st.floats(-1e6, -1e-3).map(repr))
    if matches(1, hint) is True and matches(1.5, hint) is False:  # int (maybe optional)
        return st.one_of(numbers, st.sampled_from(["2.5", "1e300"]), st.integers(-10**6, ints_low - 1).map(str))
    if matches(True, hint) is True:  # bool
        return st.one_of(WORDS, st.integers(0, 5).map(str), st.just("[true]"))
    if typing.get_origin(hint) is typing.Literal:  # one of fixed choices: another string, a number, a list
        return st.one_of(st.integers(-5, 5).map(str), st.just("[1, 2]"), st.just("true"),
                         st.sampled_from(["zz_not_a_choice", "Mean", "finetune2"]))
    if matches("a", hint) is True and matches(["a"], hint) is not True:  # str: a number, a list, a non-choice
        return st.one_of(st.integers(-5, 5).map(str), st.just("[1, 2]"), st.just("true"),
                         st.sampled_from(["zz_not_a_choice", "Mean", "finetune2"]))
    if matches([1], hint) is True:  # a list of integers (layer indices, or sizes such as iccn's cnn_channels)
        wrong = st.one_of(WORDS, st.just("[1.5, 2]"), st.lists(st.integers(-5, 0), min_size=1, max_size=3).map(_json))
        if "layers" not in name:  # out-of-range or repeated indices are wrong only for layer indices
            return wrong
        return st.one_of(wrong, st.just("[99, 99]"), st.just("[1]"), st.just("[1, 1, 1, 1, 1, 1, 1, 1, 1]"))
    if matches(["a"], hint) is True:  # a list of strings
        return st.one_of(st.just("[1]"), st.just('["x"]'), st.just("[]"), st.just('"abc"'), WORDS)
    raise AssertionError(f"no wrong values for {name}: {describe(hint)}")


def _settable_wrong(key: str):
    kind, low, inclusive = bench.SETTABLE[key][:3]
    if kind not in (int, float):
        return WORDS.filter(lambda w: w not in ("none",))
    below = st.integers(-1000, low - (0 if not inclusive else 1)).map(str) if kind is int else \
        st.floats(-1e6, low, exclude_max=inclusive).map(repr)
    return st.one_of(WORDS, below, st.just("NaN"), *([st.just("2.5")] if kind is int else []))


CASES = st.one_of(
    st.sampled_from(OPTIONS).flatmap(lambda o: st.tuples(st.just(o[0]), st.just(o[1]), _wrong(o[2], o[1], o[3]))),
    st.tuples(st.sampled_from(bench._registered_models()), st.sampled_from(sorted(bench.SETTABLE)))
      .flatmap(lambda mk: st.tuples(st.just(mk[0]), st.just(mk[1]), _settable_wrong(mk[1]))),
)


def test_every_annotated_option_is_covered():
    names = {(m, o) for m, o, _, _ in OPTIONS}
    assert ("mhmf", "heads") in names and ("mhmf", "audio_layers") in names and ("mag", "pooling") in names
    for model in bench._registered_models():  # every model has options under test
        assert any(m == model for m, _ in names), model


@pytest.mark.slow
@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=CASES)
def test_wrong_option_for_any_model_exits_2_before_anything_is_written(case, tmp_path_factory, capsys):
    model, key, text = case
    out = tmp_path_factory.mktemp("out") / "never"
    code = bench.main(["--models", "all", *SMOKE, "--out", str(out), "--set", f"{model}.{key}={text}"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, (case, err)
    assert len(lines) == 1 and "Traceback" not in err and "[run]" not in err, err
    # a registered variant's slot errors (fusionkit.slots) name the base model, e.g. mhmf for mhmf_small
    assert any(name in lines[0] for name in (model, model.split("_")[0])) and key in lines[0], (case, lines[0])
    assert not out.exists() and not out.parent.joinpath(".benchmarks.lock").exists()


@pytest.mark.parametrize("item, fragments", [
    ("mhmf.heads=3", ["model 'mhmf'", "--set mhmf.heads=3", "divisible by heads=3"]),
    ("mhmf.audio_layers=[0, 2]", ["layer 0 is below 1", "1-based"]),
    ("mhmf.audio_layers=[1, 9]", ["layer 9", "4 layers", "1..4"]),
    ("mhmf.d_fusion=abc", ["d_fusion of model 'mhmf' takes an integer", '"abc"']),
    ("mag.pooling=3", ["pooling of model 'mag' takes a string, got the integer 3"]),
    ("tfn.audio_dropout=1.5", ["dropout probability in [0, 1)", "1.5"]),
    ("tfn.warmup=1.5", ["model 'tfn'", "--set tfn.warmup=1.5", "warmup is a fraction", "[0, 1)"]),
])
def test_messages_name_model_option_value_and_what_is_allowed(item, fragments, capsys, tmp_path):
    assert bench.main(["--models", "all", *SMOKE, "--out", str(tmp_path / "o"), "--set", item]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    for fragment in fragments:
        assert fragment in line, line
    assert not (tmp_path / "o").exists()


def test_layers_flag_below_one_is_not_called_beyond_the_depth(capsys, tmp_path):
    assert bench.main(["--models", "mhmf", *SMOKE, "--layers", "audio=0,2", "--out", str(tmp_path / "o")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "layer 0 is below 1" in line and "beyond" not in line


def test_check_option_accepts_what_the_annotations_allow():
    assert check_option("mhmf", "audio_layers", [2, 4]) == [2, 4]
    assert check_option("mhmf", "loss_weights", 0.2) == 0.2 and check_option("mhmf", "loss_weights", [0.1, 0.2])
    assert check_option("mhmf", "num_triplets", None) is None
    assert check_option("tfn", "audio_dropout", 0) == 0  # an integer is a number
    assert check_option("mag", "injection_layer", 0) == 0  # default 0: 0 is allowed
    assert check_option("mult", "targets", ["l", "a"]) == ["l", "a"]
    assert math.isnan(bench._option_value("NaN"))


def _subprocess_env():
    import os

    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


@pytest.mark.slow
@pytest.mark.parametrize("item", ["mhmf.d_fusion=wide", "mhmf.heads=5"])
def test_bad_option_of_the_last_model_stops_the_process_before_any_training(item, tmp_path):
    """A real process: nothing trained, nothing under --out, one error line, no traceback."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--models", "text,tfn,mhmf", *SMOKE,
                           "--out", str(out), "--set", item], capture_output=True, text=True, cwd=ROOT,
                          env=_subprocess_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "mhmf" in lines[0] and item.split("=")[0].split(".")[1] in lines[0]
    assert "Traceback" not in proc.stderr and "[run]" not in proc.stderr
    assert not out.exists()


def test_a_model_too_big_for_memory_is_refused_before_training(capsys, tmp_path, monkeypatch):
    import benchmarks.preflight as preflight

    monkeypatch.setattr(preflight, "_physical_memory", lambda: 1 << 20)  # a 1 MiB machine
    assert bench.main(["--models", "text,tfn", *SMOKE, "--out", str(tmp_path / "o"), "--set", "tfn.text_out=64"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert "model 'tfn' with --set tfn.text_out=64 needs about" in line and "choose smaller sizes" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_resume_with_other_settings_for_the_last_model_is_refused_before_any_run(capsys, tmp_path):
    out = tmp_path / "o"
    assert bench.main(["--models", "text,tfn", *SMOKE, "--out", str(out)]) == 0
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    capsys.readouterr()
    assert bench.main(["--models", "text,tfn", *SMOKE, "--out", str(out), "--resume", "--set", "tfn.lr=0.002"]) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "tfn" in line and "holds a run with other settings" in line
    assert "[skip]" not in err and "[run]" not in err  # refused before the first (finished) run was looked at
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
