"""Equal-budget hyperparameter tuning on the validation split: ``python -m benchmarks.tune``.

Examples::

    python -m benchmarks.tune --models text,mhmf,tfn,mult,misa --dataset mosi-sim --trials 12 --workers 2
    python -m benchmarks.tune --models text,tfn --dataset synthetic --tiny-bert --trials 4 --workers 2 --epochs 2
    python -m benchmarks.run --from-tuning runs/tune-mosi-sim --seeds 5     # then: fresh seeds, test split

Every model gets the same number of finished trials (``--trials``; complete or pruned) and the same per-trial
budget: at most ``--epochs`` epochs with early stopping after ``--patience`` epochs without a better validation
MAE, one fixed seed (``--seed``), the same data. A trial samples the model's declared search space
(:mod:`fusionkit.search`, ``python -m fusionkit show MODEL``) with Optuna (TPE, or ``--sampler random``) and is
scored by the best validation MAE of its run; Optuna's median pruner stops trials whose validation curve is
worse than the median of earlier trials at the same epoch. The test split is never loaded: the tuning data holds
train and valid only (:func:`tuning_data`).

Storage: one Optuna study per model in ``OUT/study.db`` (SQLite) unless ``--storage URL`` (an RDB URL such as
``postgresql://…``, or a journal file ``journal:/shared/path/tune.log``); the same command started on another
machine with the same ``--storage`` joins the studies. ``--workers N`` starts N worker processes here. Each
worker runs trials until every model has ``--trials`` finished trials: a running trial sends a heartbeat; a trial
whose worker died (SIGKILL, lost machine) is marked failed after ``--grace`` seconds and re-queued with the same
settings, so it runs again once and is never lost; a trial that would exceed the budget is closed before
training (state FAIL, user attribute ``surplus``). ``OUT/<model>/best.json`` holds each model's best settings.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from fusionkit.cli import ArgumentParser, UsageError, run_cli

DEFAULT_EPOCHS = 20
DEFAULT_PATIENCE = 5
DEFAULT_SEED = 1000  # tuning's training seed; benchmarks.run's fresh seeds are 0..N-1 and must avoid it
SELECT_METRIC = "mae"
HEARTBEAT_ATTR = "heartbeat"
FINISHED = ("COMPLETE", "PRUNED")
ALIVE = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m benchmarks.tune", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", required=True, help="comma-separated model names (each must declare a search space)")
    p.add_argument("--dataset", default="mosi-sim", help="dataset name or path (default: mosi-sim)")
    p.add_argument("--data-root", default=None, help="directory holding the datasets (default: $FUSIONKIT_DATA)")
    p.add_argument("--trials", type=int, required=True, help="finished trials (complete or pruned) per model")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help=f"epoch cap of every trial of every model (default: {DEFAULT_EPOCHS})")
    p.add_argument("--patience", type=int, default=DEFAULT_PATIENCE,
                   help=f"early stopping: epochs without a better validation MAE (default: {DEFAULT_PATIENCE})")
    p.add_argument("--sampler", choices=("tpe", "random"), default="tpe", help="Optuna sampler (default: tpe)")
    p.add_argument("--no-prune", action="store_true", help="no pruning (default: Optuna's MedianPruner)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default: 1)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage shared by workers: an RDB URL (sqlite:///…, postgresql://…) or "
                        "journal:PATH (a journal file on a shared filesystem); default: sqlite:///OUT/study.db")
    p.add_argument("--study-prefix", default=None, help="study names are PREFIX/MODEL (default: tune-DATASET)")
    p.add_argument("--out", default=None, help="output directory (default: runs/tune-<dataset>)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"training seed of every trial (default: {DEFAULT_SEED}); sampler seeds derive from it")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: 1 with several "
                                                               "workers, else all cores)")
    p.add_argument("--max-samples", type=int, default=None, help="keep at most N examples of train and valid")
    p.add_argument("--text-model", default=None, help="text encoder (default: the bundled MiniLM-L6)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda … (default: auto)")
    p.add_argument("--heartbeat", type=float, default=10.0, help="seconds between a running trial's heartbeats")
    p.add_argument("--grace", type=float, default=60.0,
                   help="seconds without a heartbeat after which a running trial counts as lost and is retried")
    p.add_argument("--tiny-bert", action="store_true",
                   help="a tiny random BERT instead of the pretrained encoder: for smoke runs and tests only")
    p.add_argument("--worker-id", type=int, default=0,
                   help="this process's worker number (sampler stream, progress lines); with --workers N the "
                        "workers are ID..ID+N-1; give every machine or SLURM task its own range (default: 0)")
    p.add_argument("--spawned", action="store_true", help=argparse.SUPPRESS)  # a worker started by --workers
    return p


# -- data: train and valid only -----------------------------------------------------------------------------
class TrainValidSplits(dict):
    """The splits of tuning data: ``train`` and ``valid``; asking for ``test`` is an error, not a lookup."""

    def __getitem__(self, key):
        if key == "test":
            raise KeyError("the test split is not loaded while tuning (the test-set firewall): tuning selects on "
                           "the validation split only; test with python -m benchmarks.run --from-tuning")
        return super().__getitem__(key)


def tuning_data(loaded):
    """``loaded`` (a :class:`fusionkit.data.LoadedData`) without its test split. Only the ``train`` and
    ``valid`` entries are read; the test split object is never touched and no reference to it is kept."""
    from fusionkit.data.dataset import LoadedData

    splits = TrainValidSplits(train=loaded.splits["train"], valid=loaded.splits["valid"])
    return LoadedData(splits=splits, info=loaded.info)


def load_splits(*args, **kwargs):  # module-level so that tests can replace the loader
    from fusionkit.data import load_splits as load

    return load(*args, **kwargs)


# -- storage -----------------------------------------------------------------------------------------------
def open_storage(url: str):
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    from sqlalchemy.exc import IntegrityError, OperationalError  # optuna's RDB storage is built on SQLAlchemy

    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except (IntegrityError, OperationalError):
            # processes that open a new storage at the same moment (workers, SLURM tasks) race to create its
            # tables; the loser finds them on its next try
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


def study_name(args, model: str) -> str:
    return f"{args.study_prefix or 'tune-' + Path(args.dataset).name}/{model}"


def budget_of(args) -> dict:
    """What every trial of every model shares; a study joined with another budget is refused."""
    return {"trials": args.trials, "epochs": args.epochs, "patience": args.patience, "select_metric": SELECT_METRIC,
            "selected_on": "valid", "seed": args.seed, "dataset": args.dataset, "max_samples": args.max_samples,
            "sampler": args.sampler, "pruner": None if args.no_prune else "median",
            "text_model": "tiny random BERT (tests)" if args.tiny_bert else (args.text_model or "bundled MiniLM-L6")}


def make_sampler(args, worker: int):
    import optuna

    seed = args.seed * 1000 + worker  # each worker its own stream; a trial's result depends on its settings only
    if args.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, args.trials // 3), constant_liar=True)


def make_pruner(args):
    import optuna

    if args.no_prune:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)  # epochs 1 and 2 are never pruned


def create_studies(args, storage, models: list[str]) -> None:
    import optuna

    budget = budget_of(args)
    for model in models:
        for attempt in range(5):  # two machines creating one study at once: one wins, the other loads it
            try:
                study = optuna.create_study(study_name=study_name(args, model), storage=storage,
                                            direction="minimize", load_if_exists=True)
                break
            except optuna.exceptions.DuplicatedStudyError:
                time.sleep(0.5 * (attempt + 1))
        saved = study.user_attrs.get("budget")
        if saved is None:
            study.set_user_attr("budget", budget)
            study.set_user_attr("model", model)
        elif saved != json.loads(json.dumps(budget)):
            diff = ", ".join(f"{k}: study {saved.get(k)!r} vs now {budget.get(k)!r}" for k in budget
                             if saved.get(k) != budget.get(k))
            raise UsageError(f"study {study_name(args, model)!r} in {args.storage_url} was started with another "
                             f"budget ({diff}); rerun with the same settings or use another --out/--storage")


# -- one worker --------------------------------------------------------------------------------------------
class _Heartbeat:
    """Writes ``time.time()`` into a running trial's user attribute every ``interval`` seconds."""

    def __init__(self, storage, trial_id: int, interval: float) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.storage.set_trial_user_attr(self.trial_id, HEARTBEAT_ATTR, time.time())
            except Exception:  # noqa: BLE001 - the trial finished meanwhile
                return

    def __enter__(self):
        self.storage.set_trial_user_attr(self.trial_id, HEARTBEAT_ATTR, time.time())
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def fail_stale_trials(study, grace: float) -> list[int]:
    """Mark RUNNING trials without a heartbeat for ``grace`` seconds FAIL and re-queue each with its settings
    (only the worker whose state change succeeds re-queues it, so a lost trial is retried exactly once)."""
    import optuna
    from optuna.trial import TrialState

    now = time.time()
    retried = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = t.user_attrs.get(HEARTBEAT_ATTR)
        last = beat if beat is not None else (t.datetime_start.timestamp() if t.datetime_start else now)
        if now - last < grace:
            continue
        try:
            if not study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                continue
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            continue
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        retried.append(t.number)
    return retried


def _counts(study) -> dict:
    out = {s: 0 for s in ("COMPLETE", "PRUNED", "RUNNING", "WAITING", "FAIL")}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


class _Surplus(Exception):
    pass


def _is_surplus(study, trial, limit: int) -> bool:
    """Whether ``trial`` is beyond the first ``limit`` live trials (by number): created in a race with another
    worker after the budget was already taken."""
    alive = sorted(t.number for t in study.get_trials(deepcopy=False) if t.state.name in ALIVE)
    return trial.number in alive and alive.index(trial.number) >= limit


def run_trial(study, model: str, space, data, args, model_kwargs: dict, worker: int) -> dict | None:
    """Ask for one trial (a re-queued one first), train it on train/valid, tell the result. ``None`` when the
    trial turned out to be surplus."""
    import optuna

    from fusionkit.search import split_settings
    from fusionkit.training import TrainConfig, train_and_evaluate

    trial = study.ask()
    if _is_surplus(study, trial, args.trials):
        study._storage.set_trial_user_attr(trial._trial_id, "surplus", True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return None
    values = space.suggest(trial)
    train, options = split_settings(values)
    for key, value in (("train", train), ("options", options), ("seed", args.seed), ("worker", worker),
                       ("host", os.uname().nodename), ("pid", os.getpid()), ("selected_on", "valid")):
        trial.set_user_attr(key, value)
    config = TrainConfig(seed=args.seed, epochs=args.epochs, patience=args.patience, select_metric=SELECT_METRIC,
                         quiet=True, device=args.device, num_threads=args.threads, **train)
    curve: list = []

    def on_epoch(entry: dict) -> None:
        curve.append(entry["select_value"])
        trial.report(entry["select_value"], len(curve))
        trial.set_user_attr("valid_curve", curve)
        if trial.should_prune():
            raise optuna.TrialPruned(f"validation {SELECT_METRIC} {entry['select_value']:.4g} at epoch {len(curve)}")

    started = time.perf_counter()
    with _Heartbeat(study._storage, trial._trial_id, args.heartbeat):
        try:
            result = train_and_evaluate(model, data, config, {**model_kwargs, **options}, on_epoch=on_epoch)
        except (optuna.TrialPruned, FloatingPointError) as e:
            # a diverged run (non-finite loss) used its budget on settings that do not train: it ends like a
            # pruned trial and counts as finished, so every model still gets exactly --trials finished trials
            if isinstance(e, FloatingPointError):
                trial.set_user_attr("diverged", str(e))
            trial.set_user_attr("epochs_run", len(curve))
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return {"number": trial.number, "state": "diverged" if isinstance(e, FloatingPointError) else "pruned",
                    "value": min(curve) if curve else float("nan"), "epochs": len(curve),
                    "seconds": time.perf_counter() - started}
        except Exception as e:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise UsageError(f"{model} trial {trial.number} with {values} failed: {type(e).__name__}: {e}") from None
    trial.set_user_attr("best_epoch", result.best_epoch)
    trial.set_user_attr("epochs_run", len(result.history))
    trial.set_user_attr("valid", result.valid)
    study.tell(trial, result.valid[SELECT_METRIC])
    return {"number": trial.number, "state": "complete", "value": result.valid[SELECT_METRIC],
            "epochs": len(result.history), "seconds": time.perf_counter() - started}


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def worker_loop(args, models: list[str], spaces: dict, storage, worker: int, data, model_kwargs: dict) -> None:
    """Run trials until every model has ``args.trials`` finished ones; one progress line per finished trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = {m: optuna.load_study(study_name=study_name(args, m), storage=storage,
                                    sampler=make_sampler(args, worker), pruner=make_pruner(args)) for m in models}
    durations: list[float] = []
    workers = max(1, args.workers)
    while True:
        progressed = waiting = False
        for model in models:
            study = studies[model]
            fail_stale_trials(study, args.grace)
            counts = _counts(study)
            finished = counts["COMPLETE"] + counts["PRUNED"]
            if finished >= args.trials:
                continue
            if counts["WAITING"] == 0 and finished + counts["RUNNING"] >= args.trials:
                waiting = True  # the rest is running elsewhere; wait in case a worker dies
                continue
            done = run_trial(study, model, spaces[model], data, args, model_kwargs, worker)
            if done is None:
                continue
            progressed = True
            durations.append(done["seconds"])
            counts = _counts(study)
            finished = counts["COMPLETE"] + counts["PRUNED"]
            try:
                best = f"{study.best_value:.4f} (trial {study.best_trial.number})"
            except ValueError:
                best = "–"
            left = sum(max(0, args.trials - (_counts(studies[m])["COMPLETE"] + _counts(studies[m])["PRUNED"]))
                       for m in models)
            eta = sum(durations) / len(durations) * left / workers
            print(f"[worker {worker}] {model}: trial {done['number']} {done['state']} (valid {SELECT_METRIC} "
                  f"{done['value']:.4f}, {done['epochs']} epochs, {done['seconds']:.1f}s) | {finished}/{args.trials} "
                  f"finished | best {best} | ETA {_fmt_eta(eta)}", file=sys.stderr, flush=True)
            break  # back to the first model: finish models in order
        if progressed:
            continue
        if not waiting:
            return
        time.sleep(min(1.0, args.heartbeat))


# -- the command -------------------------------------------------------------------------------------------
def summarize(args, models: list[str], spaces: dict, storage, out: Path) -> dict:
    """Write ``OUT/<model>/best.json`` and ``OUT/summary.json``; print the end summary."""
    import optuna

    from fusionkit.training.checkpoint import atomic_write_json

    summary = {"budget": budget_of(args), "storage": args.storage_url, "models": {}}
    lines = [f"tuned on {args.dataset} (valid split only): {args.trials} finished trials per model, ≤ {args.epochs} "
             f"epochs, patience {args.patience}, seed {args.seed}, {args.sampler} sampler, "
             f"{'no pruning' if args.no_prune else 'median pruning'}",
             f"{'model':<12} {'complete':>8} {'pruned':>6} {'failed':>6}  {'best valid MAE':>14}  best trial settings"]
    for model in models:
        study = optuna.load_study(study_name=study_name(args, model), storage=storage)
        counts = _counts(study)
        space = spaces[model]
        if counts["COMPLETE"] == 0:  # every trial pruned or diverged: nothing to recommend
            lines.append(f"{model:<12} {0:>8} {counts['PRUNED']:>6} {counts['FAIL']:>6}  {'–':>14}  no trial "
                         f"completed, so no best.json (see the trials' 'diverged' attribute; widen --epochs or check "
                         f"the search space)")
            (out / model / "best.json").unlink(missing_ok=True)
            continue
        best = study.best_trial
        entry = {
            "model": model, "dataset": args.dataset, "study": study_name(args, model), "storage": args.storage_url,
            "selected_on": "valid", "objective": f"best-epoch validation {SELECT_METRIC} (lower is better)",
            "best_trial": best.number, "best_value": best.value, "best_epoch": best.user_attrs.get("best_epoch"),
            "epochs_run": best.user_attrs.get("epochs_run"), "valid": best.user_attrs.get("valid"),
            "train": best.user_attrs.get("train"), "options": best.user_attrs.get("options"),
            "params": best.params, "budget": budget_of(args), "tuning_seeds": [args.seed],
            "trials": {"complete": counts["COMPLETE"], "pruned": counts["PRUNED"], "failed": counts["FAIL"],
                       "retried": sum(1 for t in study.get_trials(deepcopy=False) if "retry_of" in t.user_attrs)},
            "search_space": {"source": space.source,
                             "params": {name: spec.describe() for name, spec in space.params.items()}},
        }
        atomic_write_json(out / model / "best.json", entry)
        summary["models"][model] = {k: entry[k] for k in ("best_trial", "best_value", "train", "options", "trials")}
        settings = ", ".join(f"{k}={v}" for k, v in {**(entry["train"] or {}), **(entry["options"] or {})}.items())
        lines.append(f"{model:<12} {counts['COMPLETE']:>8} {counts['PRUNED']:>6} {counts['FAIL']:>6}  "
                     f"{best.value:>14.4f}  {settings}")
    atomic_write_json(out / "summary.json", summary)
    print("\n".join(lines))
    text = " --tiny-bert" if args.tiny_bert else (f" --text-model {args.text_model}" if args.text_model else "")
    print(f"wrote {out}/<model>/best.json; next: python -m benchmarks.run --from-tuning {out} --seeds 5 "
          f"--dataset {args.dataset}{text}", file=sys.stderr)
    print(f"dashboard: optuna-dashboard {args.storage_url if not args.storage_url.startswith('journal:') else args.storage_url[len('journal:'):]}",
          file=sys.stderr)
    return summary


def main(argv: list[str] | None = None) -> int:
    try:
        return run_cli(_main, argv)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM during a trial (the engine raises TrainingInterrupted)
        if "--spawned" not in (argv if argv is not None else sys.argv[1:]):
            print(_interrupted_message(), file=sys.stderr)  # a spawned worker's parent says it for all of them
        return 130


def _main(argv) -> int:
    raw_argv = list(argv if argv is not None else sys.argv[1:])
    args = build_parser().parse_args(raw_argv)
    for name, low in (("trials", 1), ("epochs", 1), ("patience", 1), ("workers", 1)):
        if getattr(args, name) < low:
            raise UsageError(f"--{name} must be at least {low}, got {getattr(args, name)}")
    for name in ("heartbeat", "grace"):
        if not getattr(args, name) > 0:
            raise UsageError(f"--{name} must be a positive number of seconds")
    if args.grace < 2 * args.heartbeat:
        raise UsageError(f"--grace ({args.grace:g}s) must be at least twice --heartbeat ({args.heartbeat:g}s), or "
                         f"live trials would be taken for lost ones")
    if args.tiny_bert and args.text_model is not None:
        raise UsageError("--tiny-bert and --text-model are exclusive")
    from benchmarks.run import RESERVED_MODEL_OPTIONS, resolve_models
    from fusionkit.search import TRAIN_KEYS, search_space_of
    from fusionkit.training import accepted_kwargs

    models = resolve_models(args.models)
    spaces = {}
    for model in models:
        space = search_space_of(model)
        if space is None:
            raise UsageError(f"model {model!r} declares no search space (search_space next to its train_defaults); "
                             f"tune only models that do (python -m fusionkit show {model})")
        accepted = accepted_kwargs(model)
        for name in space.params:
            for key in name.split(","):
                if key not in TRAIN_KEYS and (key in RESERVED_MODEL_OPTIONS or (accepted is not None
                                                                                and key not in accepted)):
                    raise UsageError(f"model {model!r}: search space entry {key!r} is neither a training setting "
                                     f"nor an option of its factory")
        spaces[model] = space
    out = Path(args.out) if args.out is not None else Path("runs") / f"tune-{Path(args.dataset).name}"
    out.mkdir(parents=True, exist_ok=True)
    args.storage_url = args.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    if args.threads is None and args.workers > 1:
        args.threads = 1
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the workers print their own progress lines
    storage = open_storage(args.storage_url)
    if not args.spawned:
        create_studies(args, storage, models)
    if not args.spawned and args.workers > 1:  # spawn workers, then summarize
        procs = []
        for i in range(args.workers):
            cmd = [sys.executable, "-m", "benchmarks.tune", *raw_argv, "--worker-id", str(args.worker_id + i),
                   "--spawned", "--storage", args.storage_url, "--threads", str(args.threads)]
            procs.append(subprocess.Popen(cmd))
        try:
            codes = [p.wait() for p in procs]
        except KeyboardInterrupt:
            from benchmarks.workers import stop

            stop(procs)
            print(_interrupted_message(args), file=sys.stderr)
            return 130
        if any(codes):
            print(f"worker exit codes {codes}; rerun the same command to finish the studies (finished trials are "
                  f"kept, lost ones are retried)", file=sys.stderr)
            return 1
        summarize(args, models, spaces, storage, out)
        return 0

    from fusionkit.encoders.bert import TextModelNotFound, load_tokenizer
    from fusionkit.data import DataError

    try:
        tokenizer = load_tokenizer(args.text_model)
        data = tuning_data(load_splits(args.dataset, data_root=args.data_root, tokenizer=tokenizer,
                                       max_samples=args.max_samples, seed=0))
    except (DataError, TextModelNotFound) as e:
        raise UsageError(str(e)) from None
    model_kwargs: dict = {}
    if args.tiny_bert:
        from fusionkit.testing import tiny_bert_config

        model_kwargs["bert_config"] = tiny_bert_config()
    elif args.text_model is not None:
        model_kwargs["text_model"] = args.text_model
    worker_loop(args, models, spaces, storage, args.worker_id, data, model_kwargs)
    if not args.spawned:
        summarize(args, models, spaces, storage, out)
    return 0


def _interrupted_message(args=None) -> str:
    where = "the study's storage" if args is None else args.storage_url
    grace = "--grace" if args is None else f"--grace ({args.grace:g}s)"
    return (f"interrupted: tuning stopped; the finished trials are kept in {where}. Run the same command again to "
            f"finish: the trials that were running are retried once, after {grace}.")


if __name__ == "__main__":
    sys.exit(main())
