"""``python -m benchmarks.tune``: equal budgets, the test-set firewall, lost workers, ``--from-tuning``."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import benchmarks.run as bench
import benchmarks.tune as tune
import fusionkit
from fusionkit.search import TRAIN_KEYS, Choice, SearchSpace, search_space_of

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "synthetic", "--tiny-bert", "--max-samples", "24", "--epochs", "2"]


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FUSIONKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _trials(storage_url: str, study: str):
    import optuna

    return optuna.load_study(study_name=study, storage=tune.open_storage(storage_url)).get_trials(deepcopy=False)


# -- search spaces -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", fusionkit.list_components("model"))
def test_every_model_declares_a_space_of_settings_and_options(model):
    from fusionkit.training import accepted_kwargs

    space = search_space_of(model)
    assert isinstance(space, SearchSpace) and space.source and space.params, model
    accepted = accepted_kwargs(model)
    for name in space.params:
        for key in name.split(","):
            assert key in TRAIN_KEYS or accepted is None or key in accepted, (model, key)
            assert key not in ("epochs", "patience", "d_acoustic", "d_visual", "text_model", "bert_config")


def test_space_suggests_declared_values_only():
    import optuna

    space = SearchSpace(source="test", params={"lr": Choice(1e-3, 1e-2), "a,b": Choice((1, 2), (3, 4))})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        values = space.suggest(trial)
        assert values["lr"] in (1e-3, 1e-2) and (values["a"], values["b"]) in ((1, 2), (3, 4))
        assert space.from_params(trial.params) == values
        seen.add((values["a"], values["b"]))
        study.tell(trial, 0.0)
    assert seen == {(1, 2), (3, 4)}
    with pytest.raises(ValueError, match="budget"):
        SearchSpace(source="x", params={"epochs": Choice(1, 2)})


def test_show_prints_the_space_and_its_source(capsys):
    from fusionkit.__main__ import main

    assert main(["show", "mult"]) == 0
    out = capsys.readouterr().out
    assert "search space (source: MMSA's src/MMSA/config/config_tune.json, mult" in out
    assert "d_model,heads" in out


# -- the test-set firewall ---------------------------------------------------------------------------------
class PoisonSplit:
    """A test split that records, then refuses, every use."""

    touched: list = []

    def __getattribute__(self, name):
        PoisonSplit.touched.append(name)
        raise AssertionError(f"tuning touched the test split ({name})")

    def __len__(self):
        PoisonSplit.touched.append("__len__")
        raise AssertionError("tuning touched the test split (len)")

    def __getitem__(self, index):
        PoisonSplit.touched.append("__getitem__")
        raise AssertionError("tuning touched the test split (rows)")

    def __iter__(self):
        PoisonSplit.touched.append("__iter__")
        raise AssertionError("tuning touched the test split (iteration)")


def test_tuning_never_reads_the_test_split(tmp_path, monkeypatch):
    from fusionkit.data import load_splits
    from fusionkit.data.dataset import LoadedData

    def loader(*args, **kwargs):
        real = load_splits(*args, **kwargs)
        return LoadedData(splits={"train": real.splits["train"], "valid": real.splits["valid"],
                                  "test": PoisonSplit()}, info=real.info)

    monkeypatch.setattr(tune, "load_splits", loader)
    PoisonSplit.touched.clear()
    out = tmp_path / "tune"
    assert tune.main(["--models", "text", *TINY, "--epochs", "1", "--trials", "1", "--out", str(out)]) == 0
    assert PoisonSplit.touched == []
    best = json.loads((out / "text/best.json").read_text())
    assert best["selected_on"] == "valid" and best["trials"]["complete"] == 1
    assert best["budget"]["epochs"] == 1 and best["budget"]["seed"] == tune.DEFAULT_SEED
    # the split object handed to training has no test entry at all
    data = tune.tuning_data(LoadedData(splits={"train": [1], "valid": [2], "test": PoisonSplit()}, info=None))
    with pytest.raises(KeyError, match="firewall"):
        data.splits["test"]
    assert "test" not in data.splits and PoisonSplit.touched == []


@pytest.mark.slow
def test_trial_result_depends_on_its_settings_only(tmp_path):
    """The value a worker stores equals a fresh single-process run of the same settings and seed."""
    from fusionkit.data import load_splits
    from fusionkit.testing import tiny_bert_config
    from fusionkit.training import TrainConfig, train_and_evaluate

    out = tmp_path / "tune"
    assert tune.main(["--models", "tfn", *TINY, "--trials", "1", "--out", str(out), "--no-prune",
                      "--threads", "1"]) == 0
    (trial,) = _trials(f"sqlite:///{out / 'study.db'}", "tune-synthetic/tfn")
    data = tune.tuning_data(load_splits("synthetic", max_samples=24, seed=0))
    cfg = TrainConfig(seed=tune.DEFAULT_SEED, epochs=2, patience=tune.DEFAULT_PATIENCE, quiet=True, num_threads=1,
                      **trial.user_attrs["train"])
    again = train_and_evaluate("tfn", data, cfg, {"bert_config": tiny_bert_config(), **trial.user_attrs["options"]})
    assert again.valid["mae"] == trial.value and again.test == {}


def test_refusals(capsys):
    assert tune.main(["--models", "text", *TINY, "--trials", "0"]) == 2
    assert "--trials must be at least 1" in capsys.readouterr().err
    assert tune.main(["--models", "text", *TINY, "--trials", "1", "--heartbeat", "10", "--grace", "5"]) == 2
    assert "--grace" in capsys.readouterr().err


@pytest.mark.slow
def test_joining_with_another_budget_is_refused(tmp_path, capsys):
    out = tmp_path / "t"
    assert tune.main(["--models", "text", *TINY, "--trials", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert tune.main(["--models", "text", *TINY, "--trials", "1", "--epochs", "1", "--out", str(out)]) == 2
    assert "another budget (epochs: study 2 vs now 1)" in capsys.readouterr().err


# -- benchmarks.run --from-tuning ----------------------------------------------------------------------------
@pytest.mark.slow
def test_from_tuning_runs_the_best_settings_on_fresh_seeds(tmp_path, capsys):
    tuned = tmp_path / "tune"
    assert tune.main(["--models", "text,tfn", *TINY, "--trials", "2", "--out", str(tuned), "--no-prune"]) == 0
    best = json.loads((tuned / "tfn/best.json").read_text())
    out = tmp_path / "final"
    argv = ["--from-tuning", str(tuned), "--dataset", "synthetic", "--tiny-bert", "--max-samples", "24",
            "--seeds", "2", "--quiet", "--out", str(out)]
    assert bench.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["tuning"]["seeds"] == [0, 1] and results["tuning"]["tuning_seeds"] == [tune.DEFAULT_SEED]
    assert results["config"]["per_model"]["tfn"]["lr"] == best["train"]["lr"]
    assert results["config"]["per_model"]["tfn"]["epochs"] == 2
    assert results["config"]["per_model"]["tfn"]["text_out"] == best["options"]["text_out"]
    assert results["selection"]["settings"]["tfn"]["split"] == "valid"
    assert results["selection"]["epoch"]["split"] == "valid"
    paired = results["statistics"]["paired"]["tfn"]["bootstrap"]
    assert set(paired) == {"mae", "acc2_non0", "corr"} and "p_holm" in paired["mae"]
    md = (out / "results.md").read_text()
    assert "95 %" in md and "p MAE (Holm)" in md and "Gain over text" in md and "## Tuning" in md
    capsys.readouterr()
    # seeds tuning trained with are refused
    tuned2 = tmp_path / "tune2"
    assert tune.main(["--models", "text", *TINY, "--trials", "1", "--out", str(tuned2), "--seed", "1"]) == 0
    capsys.readouterr()
    assert bench.main([*argv[:1], str(tuned2), *argv[2:]]) == 2
    assert "includes seed(s) [1] that tuning trained with" in capsys.readouterr().err


# -- workers: a SIGKILLed worker loses its trial, which is retried once -------------------------------------
@pytest.mark.slow
def test_sigkilled_worker_trial_is_retried_and_budget_is_exact(tmp_path):
    out = tmp_path / "tune"
    cmd = [sys.executable, "-m", "benchmarks.tune", "--models", "text,tfn", "--dataset", "synthetic", "--tiny-bert",
           "--trials", "4", "--workers", "2", "--epochs", "2", "--max-samples", "96", "--out", str(out),
           "--heartbeat", "0.5", "--grace", "8"]  # 16 beats of slack for a loaded machine
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    url = f"sqlite:///{(out / 'study.db').resolve()}"
    killed = killed_study = storage = None
    deadline = time.monotonic() + 240
    try:
        # one storage for the whole watch, and a trial of either model: a poll that opens the storage anew can
        # take longer than a tiny trial on a loaded machine, and miss every one of them
        while killed is None and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.1)
            try:
                import optuna

                storage = storage or tune.open_storage(url)
                for name in ("tune-synthetic/text", "tune-synthetic/tfn"):
                    running = [t for t in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
                               if t.state.name == "RUNNING" and "pid" in t.user_attrs]
                    if running:
                        killed, killed_study = running[0], name
                        os.kill(killed.user_attrs["pid"], signal.SIGKILL)
                        break
            except Exception:  # noqa: BLE001 - the storage or the studies are being created
                continue
        assert killed is not None, "no trial was seen running"
        parent.communicate(timeout=600)
    finally:
        if parent.poll() is None:
            parent.kill()
    # the same command again finishes whatever is left
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    for model in ("text", "tfn"):
        trials = _trials(url, f"tune-synthetic/{model}")
        finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
        assert len(finished) == 4, [(t.number, t.state.name) for t in trials]
        assert (out / model / "best.json").is_file()
    trials = _trials(url, killed_study)
    lost = next(t for t in trials if t.number == killed.number)
    assert lost.state.name == "FAIL"
    retries = [t for t in trials if t.user_attrs.get("retry_of") == killed.number]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].state.name in ("COMPLETE", "PRUNED")


def test_a_storage_created_by_another_process_at_the_same_moment_is_opened_on_retry(tmp_path, monkeypatch):
    import optuna
    from sqlalchemy.exc import IntegrityError

    real, calls = optuna.storages.RDBStorage, []

    def racing(url, **kwargs):  # the first open loses the race to create the tables (as seen with two processes)
        calls.append(url)
        if len(calls) == 1:
            real(url, **kwargs)  # the other process's creation
            raise IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed"))
        return real(url, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    storage = tune.open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    monkeypatch.undo()
    assert len(calls) == 2 and optuna.create_study(storage=storage, study_name="s").study_name == "s"


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_with_one_message_and_the_same_command_finishes(tmp_path):
    out = tmp_path / "tune"
    cmd = [sys.executable, "-m", "benchmarks.tune", "--models", "text", "--dataset", "synthetic", "--tiny-bert",
           "--trials", "3", "--workers", "2", "--epochs", "40", "--patience", "40", "--max-samples", "96",
           "--out", str(out), "--heartbeat", "0.5", "--grace", "4"]  # trials long enough to be caught running
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # its own process group, as a terminal's: Ctrl-C reaches the parent and both workers at once
    parent = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    url = f"sqlite:///{(out / 'study.db').resolve()}"
    seen, storage, deadline = False, None, time.monotonic() + 240
    try:
        while not seen and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.1)
            try:
                import optuna

                storage = storage or tune.open_storage(url)
                seen = any(t.state.name == "RUNNING" for t in
                           optuna.load_study(study_name="tune-synthetic/text", storage=storage).get_trials())
            except Exception:  # noqa: BLE001 - the storage or the study is being created
                continue
        assert seen, f"no trial was seen running (exit {parent.poll()}): " + \
            (parent.stderr.read()[-3000:] if parent.poll() is not None else "")
        os.killpg(parent.pid, signal.SIGINT)
        _, err = parent.communicate(timeout=120)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
    assert parent.returncode == 130, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    assert err.count("interrupted: tuning stopped") == 1, err[-2000:]
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    finished = [t for t in _trials(url, "tune-synthetic/text") if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3


def test_diverged_trials_count_as_finished_and_give_no_best(tmp_path, monkeypatch, capsys):
    import fusionkit.training as training

    def diverge(*args, **kwargs):
        raise FloatingPointError("non-finite training loss at epoch 1, step 1")

    monkeypatch.setattr(training, "train_and_evaluate", diverge)
    out = tmp_path / "tune"
    assert tune.main(["--models", "text", *TINY, "--trials", "2", "--out", str(out)]) == 0
    trials = _trials(f"sqlite:///{out / 'study.db'}", "tune-synthetic/text")
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    assert all("non-finite" in t.user_attrs["diverged"] for t in trials)
    assert not (out / "text/best.json").exists() and "no trial completed" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_stale_trial_is_failed_and_requeued_once(tmp_path, kind):
    import optuna

    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"journal:{tmp_path / 's.log'}"
    storage = tune.open_storage(url)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    trial.suggest_categorical("lr", [0.1, 0.2])
    storage.set_trial_user_attr(trial._trial_id, tune.HEARTBEAT_ATTR, time.time() - 100)  # its worker died
    live = study.ask()
    storage.set_trial_user_attr(live._trial_id, tune.HEARTBEAT_ATTR, time.time())
    assert tune.fail_stale_trials(study, grace=30) == [trial.number]
    assert tune.fail_stale_trials(study, grace=30) == []  # a second sweep (another worker) re-queues nothing
    states = {t.number: t.state.name for t in study.get_trials(deepcopy=False)}
    assert states[trial.number] == "FAIL" and states[live.number] == "RUNNING"
    (waiting,) = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    assert waiting.user_attrs["retry_of"] == trial.number
    retry = study.ask()  # the next worker's ask takes the re-queued trial, with the lost trial's settings
    assert retry.number == waiting.number and retry.suggest_categorical("lr", [0.1, 0.2]) == trial.params["lr"]
