"""Every JSON file fusionkit reads back, mutated by hypothesis: the reader accepts it (a harmless change) or
refuses it with one CheckpointError / UsageError naming the file; no other exception escapes.

A mutation replaces or deletes one value anywhere in the document (or damages its bytes). Half of the mutants
come with a fresh checksum sidecar, as a foreign or buggy writer would leave them, so that the schema, not the
checksum, has to catch them. The number of mutants per file is ``MUTANTS`` (docs/reliability-promises.md).
"""
import json
import shutil
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import benchmarks.run as bench
import fusionkit
from fusionkit.cli import UsageError
from fusionkit.training import TrainConfig, integrity, train_and_evaluate
from fusionkit.training.checkpoint import CheckpointError

MUTANTS = {"state.json": 150, "model.json": 60, "run.json": 150, "result.json": 150, "sidecar": 150, "lock": 150}
ENGINE = dict(seed=0, epochs=2, batch_size=8, quiet=True, device="cpu", num_threads=1)
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck))

JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.sampled_from([-1, 0, 1, 10 ** 9]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6), st.sampled_from(["", "..", "/etc/passwd"]),
    st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def mutate(draw, doc):
    """A copy of ``doc`` with one value, reached by a random walk from the top, replaced or deleted."""
    doc = json.loads(json.dumps(doc))
    parent, key, node = None, None, doc
    while isinstance(node, (dict, list)) and node and (parent is None or draw(st.integers(0, 9)) < 7):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, draw(st.sampled_from(keys))
        node = parent[key]
    if parent is None:
        return draw(JSON_VALUES)
    if draw(st.booleans()) and isinstance(parent, dict):
        del parent[key]
    else:
        parent[key] = draw(JSON_VALUES)
    return doc


@st.composite
def mutant_bytes(draw, doc):
    """The bytes of a mutated document, or the original bytes damaged (truncated, a byte changed)."""
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    how = draw(st.sampled_from(["value", "value", "value", "truncate", "byte"]))
    if how == "value":
        return (json.dumps(draw(mutate(doc)), indent=2, sort_keys=True) + "\n").encode()
    raw = bytearray(text.encode())
    at = draw(st.integers(0, len(raw) - 1))
    if how == "truncate":
        return bytes(raw[:at])
    raw[at] = draw(st.integers(0, 255))
    return bytes(raw)


def write_mutant(path, data: bytes, rechecksum: bool) -> None:
    if rechecksum:
        integrity.write_checked(path, data)
    else:
        path.write_bytes(data)


def accepted_or_refused(call, path, errors=(CheckpointError,)):
    """Run ``call``; a refusal must be one of ``errors`` and name the file."""
    try:
        call()
    except errors as e:
        assert str(path) in str(e) or str(path.parent) in str(e), str(e)  # the file, or its checkpoint directory
        assert "\n" not in str(e)


@pytest.fixture(scope="module")
def tiny():
    from fusionkit.testing import tiny_bert_config

    return {"bert_config": tiny_bert_config()}


@pytest.fixture(scope="module")
def data():
    from fusionkit.data import load_splits
    from fusionkit.encoders.bert import load_tokenizer

    with pytest.MonkeyPatch.context():
        return load_splits("synthetic", tokenizer=load_tokenizer(None), max_samples=32, seed=0)


@pytest.fixture(scope="module")
def interrupted(data, tiny, tmp_path_factory):
    """A run stopped mid-epoch 2 (its last/ has model, optimizer and scheduler state)."""
    out = tmp_path_factory.mktemp("fuzz") / "run"

    class Stop(Exception):
        pass

    def stop(info):
        if info["epoch"] == 1 and info["batch"] == 2:  # the last save: after batch 1 of epoch 2
            raise Stop
    with pytest.raises(Stop):
        train_and_evaluate("text", data, TrainConfig(**ENGINE, out_dir=out, save_every=1), tiny, on_step=stop)
    return out


@pytest.fixture(scope="module")
def restorer(data, tiny, interrupted):
    """``restore(out_dir)``: exactly what ``resume`` does first (engine._load_last and the best weights)."""
    from fusionkit.training import engine
    from fusionkit.training.build import build_model
    from fusionkit.training.optim import build_optimizer, build_scheduler

    kwargs = engine._build_kwargs(data, tiny, "text")
    model = build_model("text", kwargs)
    cfg = TrainConfig(**ENGINE, out_dir=interrupted).resolve(dict(model.train_defaults))
    optimizer = build_optimizer(model, lr=cfg.lr, encoder_lr=cfg.encoder_lr, weight_decay=cfg.weight_decay)
    scheduler = build_scheduler(optimizer, total_steps=4, warmup=cfg.warmup, schedule=cfg.schedule)
    identity = json.loads((interrupted / "last/state.json").read_text())["identity"]

    def restore(out):
        run = engine._Run()
        engine._load_last(out, identity, run, model, optimizer, scheduler, 0)
        if run.best_epoch:
            engine._checked_best(out, run, restore=False)
    restore(interrupted)  # the unmutated checkpoint restores
    return restore


@pytest.mark.slow
@settings(max_examples=MUTANTS["state.json"], **SETTINGS)
@given(st.data(), st.booleans())
def test_state_json_mutants(interrupted, restorer, tmp_path_factory, draw, rechecksum):
    out = tmp_path_factory.mktemp("state") / "run"
    shutil.copytree(interrupted, out)
    path = out / "last/state.json"
    write_mutant(path, draw.draw(mutant_bytes(json.loads(path.read_text()))), rechecksum)
    accepted_or_refused(lambda: restorer(out), path)


@pytest.fixture(scope="module")
def best_dir(interrupted):
    return interrupted / "best"


@pytest.mark.slow
@settings(max_examples=MUTANTS["model.json"], **SETTINGS)
@given(st.data(), st.booleans())
def test_model_json_mutants(best_dir, tmp_path_factory, draw, rechecksum):
    import warnings

    from fusionkit.encoders.bert import TextModelNotFound

    best = tmp_path_factory.mktemp("model") / "best"
    shutil.copytree(best_dir, best)
    path = best / "model.json"
    write_mutant(path, draw.draw(mutant_bytes(json.loads(path.read_text()))), rechecksum)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        accepted_or_refused(lambda: fusionkit.load(best), path, (CheckpointError, TextModelNotFound))


def _run_spec_args():
    return types.SimpleNamespace(dataset="synthetic", max_samples=16, precision_resolved="fp32", features=[],
                                 resume=True)


@pytest.mark.slow
@settings(max_examples=MUTANTS["run.json"], **SETTINGS)
@given(st.data())
def test_run_json_mutants(data, tiny, tmp_path_factory, draw):
    run_dir = tmp_path_factory.mktemp("runjson")
    variant = bench.Variant("text", "text", {})
    spec = bench.check_resumable(variant, 0, data, _run_spec_args(), {"tiny": True}, run_dir, {"epochs": 1})
    (run_dir / "run.json").write_bytes(draw.draw(mutant_bytes(spec)))
    accepted_or_refused(lambda: bench.check_resumable(variant, 0, data, _run_spec_args(), {"tiny": True}, run_dir,
                                                      {"epochs": 1}),
                        run_dir / "run.json", (CheckpointError, UsageError))


@pytest.fixture(scope="module")
def finished_run(data, tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "seed0"
    train_and_evaluate("text", data, TrainConfig(**{**ENGINE, "epochs": 1}, out_dir=out), tiny)
    return out


@pytest.mark.slow
@settings(max_examples=MUTANTS["result.json"], **SETTINGS)
@given(st.data())
def test_result_json_mutants(finished_run, tmp_path_factory, draw):
    from benchmarks.outdir import check_finished

    run_dir = tmp_path_factory.mktemp("result") / "seed0"
    shutil.copytree(finished_run, run_dir)
    path = run_dir / "result.json"
    path.write_bytes(draw.draw(mutant_bytes(json.loads(path.read_text()))))

    def read():
        result = check_finished(run_dir)
        bench.summarize([{**result, "model": "text"}], ["text"])
    accepted_or_refused(read, path)


@pytest.mark.slow
@settings(max_examples=MUTANTS["sidecar"], **SETTINGS)
@given(st.data(), st.sampled_from(["best/model.safetensors", "best/model.json", "last/state.json"]))
def test_checksum_file_mutants(finished_run, tmp_path_factory, draw, which):
    run_dir = tmp_path_factory.mktemp("sidecar") / "seed0"
    shutil.copytree(finished_run, run_dir)
    target = run_dir / which
    side = integrity.sidecar(target)
    original = json.loads(side.read_text())
    mutant = draw.draw(mutant_bytes(original))
    side.write_bytes(mutant)
    try:
        integrity.verify(target)
    except CheckpointError as e:
        assert side.name in str(e) and target.name in str(e)
    else:  # accepted: the sidecar still describes the file (e.g. an unchanged or extra value)
        assert integrity.sha256_file(target) in {v["sha256"] for v in json.loads(mutant)["versions"]}


@pytest.mark.slow
@settings(max_examples=MUTANTS["lock"], **SETTINGS)
@given(st.data())
def test_lock_file_mutants(tmp_path_factory, draw):
    import os
    import warnings

    from benchmarks.lock import LOCK_NAME, DirectoryLock, check_free

    out = tmp_path_factory.mktemp("lock")
    holder = {"pid": os.getpid() + 10 ** 6, "pid_start": "1", "host": "h", "started": 1.0, "command": "x"}
    (out / LOCK_NAME).write_bytes(draw.draw(mutant_bytes(holder)))
    check_free(out)  # nobody holds it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with DirectoryLock(out, ["test"]):
            assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()


BERT = ("kwargs", "bert_config", "__transformers_config__")


def _set(doc, path: tuple, value) -> None:
    """Replace the value at ``path`` (keys and list indices) inside the JSON document ``doc``."""
    for k in path[:-1]:
        doc = doc[k]
    doc[path[-1]] = value


@pytest.mark.parametrize("path,value,key", [
    (("d_acoustic",), -5, "d_acoustic"), (("kwargs", "dropout"), 2.0, "kwargs.dropout"),
    (("kwargs", "dropout"), "0.1", "kwargs.dropout"), (("max_seq_length",), 0, "max_seq_length"),
    (("kwargs", "d_visual"), 3, "kwargs.d_visual"), (("aligned",), "yes", "aligned"),
    ((*BERT, "hidden_size"), -1, "hidden_size"), ((*BERT, "hidden_size"), "32", "hidden_size"),
    ((*BERT, "model_type"), "nope", "bert_config.*nope"), ((*BERT, "num_attention_heads"), 0, "num_attention_heads"),
    (BERT, [], "__transformers_config__"),
])
def test_hand_edited_model_json_is_one_error_naming_the_key(best_dir, tmp_path, path, value, key):
    best = tmp_path / "best"
    shutil.copytree(best_dir, best)
    doc = json.loads((best / "model.json").read_text())
    _set(doc, path, value)
    (best / "model.json").write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="changed after it was written"):
        with pytest.raises(CheckpointError, match=rf"model\.json.*{key}") as e:
            fusionkit.load(best)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("path,value,key", [
    (("run", "epoch"), "1", "run.epoch"), (("run", "best_epoch"), 99, "run.best_epoch"),
    (("files", "model"), "../../x.safetensors", "files.model"), (("rng",), [], "rng"),
    (("optimizer", "param_groups", 0, "lr"), -1, "lr"), (("identity", "world_size"), 0, "identity.world_size"),
])
def test_well_formed_but_wrong_state_json_names_the_key(interrupted, restorer, tmp_path, path, value, key):
    out = tmp_path / "run"
    shutil.copytree(interrupted, out)
    doc = json.loads((out / "last/state.json").read_text())
    _set(doc, path, value)
    integrity.write_checked(out / "last/state.json", json.dumps(doc).encode())  # a correct checksum
    with pytest.raises(CheckpointError, match=rf"state\.json: key '[^']*{key}"):
        restorer(out)
