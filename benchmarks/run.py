"""Train and evaluate models over several seeds and tabulate mean ± std: ``python -m benchmarks.run``.

Examples::

    python -m benchmarks.run --models mhmf,mag,misa --dataset mosi-sim --seeds 5
    python -m benchmarks.run --models all --dataset synthetic --seeds 1 --epochs 2
    python -m benchmarks.run --study finetune      # paper §4.2: fine-tuned / frozen / random BERT in mhmf
    python -m benchmarks.run --study layers        # Table 3: which BERT layers feed audio / vision
    python -m benchmarks.run --study restitution   # Fig. 4: with / without restitution, t-SNE of features

Each run lives in ``OUT/<run>/seed<k>/`` (checkpoints, ``log.jsonl``, ``curve.png``, ``result.json``);
``OUT/results.json`` and ``OUT/results.md`` gather them. ``--resume`` skips finished runs and continues
interrupted ones from their last checkpoint.

Every model's options and training settings are checked (each model built once on the meta device) before
anything is trained or written (:mod:`benchmarks.preflight`); one process at a time writes to ``OUT``
(``OUT/.benchmarks.lock``, :mod:`benchmarks.lock`). ``results.md`` flags runs that were still improving at
their last epoch or whose test predictions are nearly constant, with a remedy.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from benchmarks import paper_tables as paper
from benchmarks import studies
from benchmarks.studies import ENCODER_MODES, Variant, scale_layers, table3_variants  # noqa: F401 - re-exported
from benchmarks.preflight import check_option, preflight
from fusionkit.cli import ArgumentParser, UsageError, run_cli
from fusionkit.training.config import settable

# Every model the project plans to provide, in table order (others registered by plug-ins come after).
PLANNED_MODELS: tuple[str, ...] = ("mhmf", "mhmf_small", "mag", "mag_mmsa", "misa", "iccn", "mult", "lmf", "tfn",
                                   "text")
# Training settings ``--set MODEL.KEY=VALUE`` may give one model: key → (type, smallest allowed value, inclusive)
# or (str, allowed values, None); derived from the limits of TrainConfig's fields (fusionkit.training.config.LIMITS).
SETTABLE = settable()


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=None,
                   help="comma-separated model names or 'all' (default: all registered models; mhmf with --study)")
    p.add_argument("--dataset", default="mosi-sim", help="dataset name or path (default: mosi-sim)")
    p.add_argument("--data-root", default=None, help="directory holding the datasets (default: $FUSIONKIT_DATA)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds: runs use seeds 0..N-1 (default: 5)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: each model's own)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: each model's own)")
    p.add_argument("--lr", type=float, default=None, help="learning rate of the non-encoder parameters")
    p.add_argument("--encoder-lr", type=float, default=None, help="learning rate of the BERT encoder")
    p.add_argument("--text-model", default=None,
                   help="text encoder: local path or cached Hugging Face name (default: the bundled MiniLM-L6)")
    p.add_argument("--out", default=None, help="output directory (default: runs/<dataset>)")
    p.add_argument("--resume", action="store_true", help="skip finished runs, continue interrupted ones")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the finished or interrupted runs already in --out (without it, or --resume, an --out "
                        "holding runs is refused)")
    p.add_argument("--max-train-samples", type=int, default=None, help="train on the first N training examples")
    p.add_argument("--set", action="append", default=[], metavar="MODEL.KEY=VALUE", dest="sets",
                   help="a training setting (" + ", ".join(SETTABLE) + ") or a model option (any argument of the "
                        "model's factory, e.g. mag.beta_shift=0.5, mhmf.d_fusion=64) for one model, over the flags "
                        "above; a slot takes a registered block: mhmf.fusion=NAME or, with arguments, "
                        "'mhmf.fusion={\"name\": \"NAME\", \"key\": 1}' (python -m fusionkit show MODEL lists "
                        "the slots); repeatable")
    p.add_argument("--max-samples", type=int, default=None,
                   help="keep at most N examples of every split (a seeded subset; smoke runs)")
    p.add_argument("--encoder-mode", choices=ENCODER_MODES, default=None,
                   help="BERT encoder: fine-tuned, frozen, or randomly initialised (models with encoder_mode)")
    p.add_argument("--no-restitution", action="store_true", help="mhmf ablation without restitution")
    p.add_argument("--layers", nargs="+", metavar="MODALITY=L1,L2", default=None,
                   help="BERT layers (1-based, of the encoder in use) per fusion stage, e.g. audio=4,6 vision=3,5")
    p.add_argument("--study", choices=sorted(studies.STUDIES), default=None,
                   help="paper studies with mhmf: finetune (§4.2), layers (Table 3), restitution (Fig. 4); "
                        "probes: any --models over the fusion probes (capability matrix, benchmarks/probes.py)")
    for study in studies.STUDIES.values():  # options of one study (e.g. --study probes: --fast, --probes)
        study.add_arguments(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 … (default: auto)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="autocast precision of forward and loss; weights, optimizer state and checkpoints stay fp32 "
                        "(default: auto = bf16 on a CUDA device that supports it, else fp32); recorded in run.json")
    p.add_argument("--save-interval", type=float, default=None, metavar="SECONDS",
                   help="mid-epoch checkpoint every SECONDS of training (default: 300; 0 = epoch ends only); "
                        "epoch ends, SIGINT and SIGTERM always save")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process (default: all cores, shared among torchrun processes); 1 is "
                        "fastest for small models on a busy machine")
    p.add_argument("--features", action="append", default=[], metavar="MODALITY=PATH",
                   help="a segment-level feature table (CSV or .npz with segment_id) joined by id to the segment "
                        "table given as --dataset, e.g. acoustic=egemaps.csv; repeatable (a modality without one is "
                        "absent)")
    p.add_argument("--modalities", default=None, metavar="t[,a][,v]",
                   help="train on a subset of the dataset's modalities, e.g. t, t,a, t,v, t,a,v (default: all the "
                        "dataset has); each model handles an absent modality its own way (see its docstring)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (the log lines stay; see --log-level)")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="progress log lines on stderr (logger 'fusionkit'): INFO = one per epoch per run, resumes "
                        "and a summary; WARNING hides them (default: INFO)")
    p.add_argument("--tiny-bert", action="store_true",
                   help="a tiny random BERT instead of the pretrained encoder: for smoke runs and tests only")
    add_statistics_arguments(p)
    return p


# -- statistics, tuning and workers (fusionkit.stats, benchmarks.tuned, benchmarks.workers) -----------------
def add_statistics_arguments(p) -> None:
    from benchmarks import tuned

    from benchmarks import workers

    p.add_argument("--reference", default="text",
                   help="model every other row is compared with (paired bootstrap, Holm; default: text)")
    tuned.add_arguments(p)
    workers.add_arguments(p)


def run_grid(args, argv, variants, data, model_kwargs, train_overrides, per_model, out: Path,
             plans: dict | None = None) -> int | None:
    """``--workers N`` spawns N grid workers and returns ``None`` once every run is finished (the caller then
    writes the results as a single process would); ``--grid-worker ID`` trains runs (``plans``: each row's plan
    from the preflight, by label) and returns 0."""
    from benchmarks import workers

    if args.grid_worker is None:
        workers.run_workers(list(argv if argv is not None else sys.argv[1:]), args.workers, args.threads)
        return None
    tasks = [(v.label, seed, out / v.dirname / f"seed{seed}") for v in variants for seed in range(args.seeds)]
    by_index = [(v, seed) for v in variants for seed in range(args.seeds)]

    def train(index: int, took_over: bool) -> None:
        variant, seed = by_index[index]
        run_one(variant, seed, data, args, model_kwargs, tasks[index][2],
                {**train_overrides, **per_model.get(variant.model, {})}, (plans or {}).get(variant.label))

    workers.work(tasks, train, heartbeat=args.heartbeat, grace=args.grace, worker=args.grid_worker)
    return 0


def add_statistics(results: dict, runs: list[dict], labels: list[str], run_dirs: dict, reference: str) -> None:
    """``results["statistics"]`` (:func:`fusionkit.stats.table_statistics`) from the runs' test predictions."""
    from fusionkit import stats

    files = {label: {seed: Path(d) / "test_predictions.csv" for seed, d in by_seed.items()}
             for label, by_seed in run_dirs.items()}
    results["statistics"] = stats.table_statistics(runs, labels, reference=reference, predictions=files)


# -- argument handling -------------------------------------------------------------------------------------
def _registered_models() -> list[str]:
    import fusionkit

    names = fusionkit.list_components("model")
    return [m for m in PLANNED_MODELS if m in names] + [m for m in names if m not in PLANNED_MODELS]


def resolve_models(spec: str | None) -> list[str]:
    registered = _registered_models()
    if spec is None or spec.strip() == "all":
        if not registered:
            raise UsageError("no model is registered")
        return registered
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise UsageError("--models is empty; pass comma-separated names or 'all'")
    for name in names:
        if name in registered:
            continue
        if name in PLANNED_MODELS:
            raise UsageError(f"model {name!r} is planned but not implemented in this checkout yet; "
                             f"registered models: {', '.join(registered)}")
        raise UsageError(f"unknown model {name!r}; registered models: {', '.join(registered)}")
    return list(dict.fromkeys(names))


def parse_layers(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("audio", "vision"):
            raise UsageError(f"--layers item {item!r} is not MODALITY=L1,L2 with MODALITY audio or vision "
                             f"(e.g. --layers audio=4,6 vision=3,5)")
        try:
            layers = tuple(int(v) for v in value.split(","))
        except ValueError:
            raise UsageError(f"--layers {item!r}: layers must be comma-separated integers") from None
        out[f"{key}_layers"] = layers
    return out


# model options that the command line sets itself (from the data or from their own flags)
RESERVED_MODEL_OPTIONS = {"text_model": "--text-model", "bert_config": "--text-model", "d_acoustic": "the dataset",
                          "d_visual": "the dataset", "modalities": "--modalities"}


def _option_value(text: str):
    """A JSON scalar or list (``0.1``, ``true``, ``[4, 6]``), else the text itself as a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_sets(items: list[str], models: list[str]) -> tuple[dict[str, dict], dict[str, dict]]:
    """``["mag.lr=5e-5", "mag.beta_shift=0.5", …]`` → ``(training settings, model options)`` per model, e.g.
    ``({"mag": {"lr": 5e-05}}, {"mag": {"beta_shift": 0.5}})``.

    A key of :data:`SETTABLE` is a training setting; any other key must be an option of the model's factory.
    Each model must be one of ``models``.
    """
    from fusionkit.training import accepted_kwargs

    train: dict[str, dict] = {}
    options: dict[str, dict] = {}
    for item in items:
        target, sep, value = item.partition("=")
        model, dot, key = target.strip().rpartition(".")
        if not sep or not dot or not model or not key:
            raise UsageError(f"--set {item!r} is not MODEL.KEY=VALUE (e.g. --set mag.lr=5e-5)")
        if model not in models:
            raise UsageError(f"--set {item!r}: model {model!r} is not among the models run ({', '.join(models)})")
        if key in SETTABLE:
            kind, low, inclusive = SETTABLE[key]
            if kind is str:
                if value not in low:
                    raise UsageError(f"--set {item!r}: {key} is one of {', '.join(low)}")
                train.setdefault(model, {})[key] = value
                continue
            try:
                number = kind(value)
            except ValueError:
                raise UsageError(f"--set {item!r}: {key} takes {'an integer' if kind is int else 'a number'}") from None
            if not math.isfinite(number) or number < low or (number == low and not inclusive):
                raise UsageError(f"--set {item!r}: {key} must be {'at least' if inclusive else 'above'} {low}")
            train.setdefault(model, {})[key] = number
            continue
        if key in RESERVED_MODEL_OPTIONS:
            raise UsageError(f"--set {item!r}: {key} comes from {RESERVED_MODEL_OPTIONS[key]}, not from --set")
        accepted = accepted_kwargs(model)
        if accepted is not None and key not in accepted:
            raise UsageError(f"--set {item!r}: {key!r} is neither a training setting ({', '.join(SETTABLE)}) nor an "
                             f"option of model {model!r} ({', '.join(sorted(set(accepted) - set(RESERVED_MODEL_OPTIONS)))})")
        options.setdefault(model, {})[key] = check_option(model, key, _option_value(value), value)
    return train, options


def set_sources(items: list[str]) -> dict[str, dict[str, str]]:
    """``{model: {key: "--set model.key=value"}}`` (the last of repeated keys), to name options in errors."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        target, _, _ = item.partition("=")
        model, _, key = target.strip().rpartition(".")
        out.setdefault(model, {})[key] = f"--set {item}"
    return out


def encoder_depth(text_model: str | None, tiny: bool) -> int:
    if tiny:
        from fusionkit.testing import tiny_bert_config

        return tiny_bert_config().num_hidden_layers
    from transformers import AutoConfig

    from fusionkit.encoders.bert import resolve_text_model

    return AutoConfig.from_pretrained(resolve_text_model(text_model), local_files_only=True).num_hidden_layers


def plan_variants(args, depth_fn) -> list[Variant]:
    """The table rows: models × ablation flags, or a study's variants of mhmf."""
    from fusionkit.training import accepted_kwargs

    if args.study is not None:
        model = studies.STUDIES[args.study].model
        if args.models not in (None, model, "all"):
            raise UsageError(f"--study {args.study} runs {model} only; drop --models {args.models}")
        models = resolve_models(model)
    else:
        models = resolve_models(args.models)
    flags = {}
    if args.encoder_mode is not None:
        flags["encoder_mode"] = ("--encoder-mode", args.encoder_mode)
    if args.no_restitution:
        flags["restitution"] = ("--no-restitution", False)
    if args.layers:
        layers = parse_layers(args.layers)
        depth = depth_fn()
        for key, value in layers.items():
            bad = [l for l in value if not 1 <= l <= depth]
            if bad:
                modality = key.removesuffix("_layers")
                best = paper.TABLE3[-1][modality]
                where = "below 1" if bad[0] < 1 else f"beyond the text encoder's depth of {depth} layers"
                raise UsageError(f"--layers {modality}={','.join(map(str, value))}: layer {bad[0]} is {where}; use "
                                 f"layer indices 1..{depth} (1 = first transformer layer, {depth} = last), e.g. the "
                                 f"paper's choice at this depth --layers "
                                 f"{modality}={','.join(map(str, scale_layers(best, depth)))}")
            flags[key] = ("--layers", value)
    accepted = {m: accepted_kwargs(m) for m in models}
    for key, (flag, _) in flags.items():
        if not any(a is None or key in a for a in accepted.values()):
            raise UsageError(f"{flag} has no effect on {', '.join(models)}: none of them accepts {key!r}")
    study = studies.STUDIES[args.study] if args.study is not None else None
    if study is not None:
        for key, (flag, _) in flags.items():
            if study.varies(key):
                raise UsageError(f"{flag} conflicts with --study {args.study}, which varies it itself")

    def base(model):
        return {k: v for k, (_, v) in flags.items() if accepted[model] is None or k in accepted[model]}

    if study is None:
        return [Variant(label=m, model=m, kwargs=base(m)) for m in models]
    return study.variants(base(study.model), depth_fn)


def is_main_process() -> bool:
    """False in the ranks > 0 of a ``torchrun`` job: only rank 0 writes files and prints the table."""
    return int(os.environ.get("RANK", "0")) == 0


def _check_out_path(out: Path) -> None:
    """Refuse an ``--out`` that cannot become a directory, without creating anything."""
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UsageError(f"cannot write to --out {str(out)!r} (Not a directory: {str(probe)!r} is a file); choose "
                         f"a writable directory")


def _check_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"cannot write to --out {str(out)!r} ({e.strerror or e}); choose a writable directory") \
            from None


def parse_features(items: list[str]) -> dict | None:
    """``["acoustic=a.csv"]`` → ``{"acoustic": "a.csv"}`` (``None`` when empty)."""
    features = {}
    for item in items:
        modality, sep, path = item.partition("=")
        if not sep or modality not in ("acoustic", "visual") or not path:
            raise UsageError(f"--features {item!r} is not MODALITY=PATH with MODALITY acoustic or visual")
        if modality in features:
            raise UsageError(f"--features gives two {modality} tables")
        features[modality] = path
    return features or None


def select_modalities(data, spec: str | None):
    """``data`` restricted to ``--modalities`` (default: all it has); a modality it lacks is a usage error.

    A channel dropped here keeps its kind in ``info.channels`` (its size is 0), so the table header can say
    "not used"."""
    if spec is None:
        return data
    from fusionkit.data.dataset import parse_modalities

    try:
        wanted = parse_modalities(spec)
        selected = data.select_modalities(wanted)
    except ValueError as e:
        raise UsageError(f"--modalities {spec}: {e}") from None
    if selected is not data:
        selected.info.channels = {**selected.info.channels,
                                  **{c: data.info.channel_kind(c) for c, m in (("acoustic", "a"), ("visual", "v"))
                                     if m in data.info.modalities and m not in wanted}}
    return selected


# -- runs --------------------------------------------------------------------------------------------------
def _json_clean(obj):
    from fusionkit.training.build import to_json_kwargs

    return json.loads(json.dumps(to_json_kwargs(obj), sort_keys=True))


def check_resumable(variant: Variant, seed: int, data, args, model_kwargs: dict, run_dir: Path,
                    train_overrides: dict) -> dict:
    """The ``run.json`` content of one variant/seed; with ``--resume``, a run already in ``run_dir`` made with
    other settings is a :class:`UsageError` (checked for every run before the first starts)."""
    from fusionkit.training.checkpoint import read_json

    from fusionkit.slots import resolve_composition

    kwargs = {**model_kwargs, **variant.kwargs}
    spec = {"model": variant.model, "kwargs": _json_clean(kwargs), "seed": seed, "dataset": args.dataset,
            "train": train_overrides, "max_samples": args.max_samples, "precision": args.precision_resolved,
            "composition": resolve_composition(variant.model, kwargs)}
    if tuple(data.info.modalities) != ("t", "a", "v"):  # recorded only for a subset: older run.json stay valid
        spec["modalities"] = ",".join(data.info.modalities)
    if args.features:
        spec["features"] = sorted(args.features)
    if getattr(args, "cue_strength", None) is not None:  # a probe study at another than the calibrated strength
        spec["cue_strength"] = args.cue_strength
    from fusionkit.schemas import RUN_SPEC, load_checked

    saved = load_checked(run_dir / "run.json", RUN_SPEC) if args.resume and (run_dir / "run.json").is_file() else None
    if saved is not None and saved.get("precision", "fp32") != spec["precision"]:
        raise UsageError(f"{run_dir} was trained with --precision {saved.get('precision', 'fp32')}, this run asks "
                         f"for {spec['precision']}; resume with --precision {saved.get('precision', 'fp32')} or use a "
                         f"new --out")
    if saved is not None and saved != spec:
        # refused before anything is written: the finished or interrupted run stays as it is
        raise UsageError(f"{run_dir} holds a run with other settings; use a new --out or drop --resume")
    return spec


def run_one(variant: Variant, seed: int, data, args, model_kwargs: dict, run_dir: Path, train_overrides: dict,
            plan=None):
    """Train (or, with --resume, reuse) one variant/seed; returns the ``result.json`` content. ``plan``: the row's
    :class:`fusionkit.planning.Plan` from the preflight (its checked arguments are trained as they are)."""
    from fusionkit.training import TrainConfig, train_and_evaluate
    from fusionkit.training.checkpoint import atomic_write_json, read_json

    spec = check_resumable(variant, seed, data, args, model_kwargs, run_dir, train_overrides)
    done = run_dir / "result.json"
    if args.resume and done.is_file() and (run_dir / "run.json").is_file():
        from benchmarks.outdir import check_finished

        result = check_finished(run_dir)  # schema and checksums: a table never comes from damaged files
        print(f"[skip] {variant.label} seed {seed}: already finished", file=sys.stderr)
        return result
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "run.json", spec)
    config = TrainConfig(seed=seed, out_dir=run_dir, resume=args.resume, quiet=args.quiet, device=args.device,
                         num_threads=args.threads, precision=args.precision_resolved,
                         save_interval=args.save_interval, **train_overrides)
    result = train_and_evaluate(plan if plan is not None else variant.model, data, config,
                                None if plan is not None else {**model_kwargs, **variant.kwargs})
    if args.study is not None and is_main_process():
        studies.STUDIES[args.study].after_run(result, run_dir)
    from fusionkit.schemas import check_result

    return check_result(read_json(done), done)


def check_compositions(checked: list) -> dict[str, dict]:
    """Each row's resolved composition (slot → block, plug-in, args), from its plan: the preflight's plan already
    dry-ran every block other than a slot's default against the slot's contract, before anything is written."""
    return {info.label: info.plan.composition for info in checked}


def summarize(runs: list[dict], labels: list[str]) -> dict:
    """``{label: {metric: {"mean", "std"}}}``; std is the sample standard deviation (0 for one seed)."""
    from fusionkit.metrics import METRICS

    summary = {}
    for label in labels:
        mine = [r for r in runs if r["model"] == label]
        summary[label] = {}
        for metric in METRICS:
            values = np.array([r["test"][metric] for r in mine], dtype=np.float64)
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            summary[label][metric] = {"mean": float(values.mean()), "std": std}
    return summary


# A run "did not learn" when its test predictions are nearly constant: their standard deviation is below this
# fraction of the test labels' (a model predicting about the mean scores a plausible MAE and learns nothing).
CONSTANT_PREDICTION_FRACTION = 0.1
FLAG_MARK = "⚠"


def _remedy_epochs(model: str, epochs: int, defaults: dict, args) -> str:
    default_epochs = defaults.get("epochs")
    if default_epochs is not None and default_epochs > epochs:
        how = f"pass `--set {model}.epochs={default_epochs}`"
        if args.epochs is not None:
            how = f"drop `--epochs {args.epochs}` or " + how
        return (f"its default schedule (`train_defaults`) is {default_epochs} epochs at lr {defaults.get('lr')}: "
                f"{how}")
    return f"train longer: pass `--set {model}.epochs={2 * epochs}`"


def convergence_flags(runs: list[dict], checked: list, args) -> dict[str, list[dict]]:
    """``{label: [flag]}`` for runs that were still improving (best validation epoch = last epoch) or whose
    test predictions are nearly constant (std < :data:`CONSTANT_PREDICTION_FRACTION` × the labels' std)."""
    flags: dict[str, list[dict]] = {}
    for info in checked:
        mine = [r for r in runs if r["model"] == info.label]
        found = []
        improving = [r for r in mine if r["best_epoch"] == (r.get("epochs_run") or info.train["epochs"])]
        if improving:
            last = improving[0].get("epochs_run") or info.train["epochs"]
            found.append({
                "kind": "still_improving", "seeds": [r["seed"] for r in improving],
                "detail": f"best validation epoch {improving[0]['best_epoch']} of {last} (seed"
                          f"{'s' if len(improving) > 1 else ''} {', '.join(str(r['seed']) for r in improving)}): "
                          f"still improving when training stopped",
                "remedy": [_remedy_epochs(info.model, last, info.train_defaults, args)]})
        flat = [r for r in mine if r.get("test_prediction_std") is not None and r.get("test_label_std")
                and r["test_prediction_std"] < CONSTANT_PREDICTION_FRACTION * r["test_label_std"]]
        if flat:
            r = flat[0]
            epochs = r.get("epochs_run") or info.train["epochs"]
            remedy = [_remedy_epochs(info.model, epochs, info.train_defaults, args),
                      f"raise the learning rate (now lr {info.train['lr']}, encoder_lr {info.train['encoder_lr']}): "
                      f"`--set {info.model}.lr=…`"]
            found.append({
                "kind": "constant_predictions", "seeds": [x["seed"] for x in flat],
                "detail": f"test predictions nearly constant (std {r['test_prediction_std']:.3g} vs the labels' "
                          f"{r['test_label_std']:.3g}, below {CONSTANT_PREDICTION_FRACTION:g}×; seed"
                          f"{'s' if len(flat) > 1 else ''} {', '.join(str(x['seed']) for x in flat)}): it did not "
                          f"learn, its metrics are those of a constant guess",
                "remedy": remedy})
        if found:
            flags[info.label] = found
    return flags


def _fmt(metric: str, mean: float, std: float | None = None) -> str:
    from fusionkit.metrics import format_metric

    text = format_metric(metric, mean)
    return text if std is None else f"{text} ± {format_metric(metric, std)}"


def channel_title(channels: dict | None, modalities: str | None, simulated: bool) -> str:
    """``from file: text, acoustic; absent: visual`` — which channels were read from the data file, simulated,
    absent or not used (a channel's kind is what the reader produced, never taken from the dataset's name)."""
    if not channels:  # results written before channels were recorded
        return "simulated audio/visual" if simulated else ""
    used = set((modalities or "t,a,v").split(","))
    groups: dict[str, list] = {"from file": [], "simulated": [], "absent": [], "not used": []}
    for name, letter in (("text", "t"), ("acoustic", "a"), ("visual", "v")):
        kind = channels.get(name, "absent")
        kind = "from file" if kind in ("file", "real") else kind  # "real": results written by earlier versions
        if kind != "absent" and letter not in used:
            groups["not used"].append(f"{name} ({kind})")
        else:
            groups.setdefault(kind, []).append(name)
    return "; ".join(f"{k}: {', '.join(v)}" for k, v in groups.items() if v)


def render_markdown(results: dict) -> str:
    from fusionkit.metrics import METRICS, metric_label

    title = channel_title(results.get("channels"), results.get("modalities"), results["simulated"])
    n = len(results["seeds"])
    spread = (f"mean ± std over {n} seeds ({', '.join(map(str, results['seeds']))})" if n > 1 else
              f"1 seed ({results['seeds'][0]}), so no spread: a single run's numbers")
    lines = [f"# Results on {results['dataset']}" + (f" — {title}" if title else ""), "",
             f"Test metrics of the weights selected on the validation split, {spread}; text model: "
             f"{results['text_model']}. Accuracies and F1 in %; MAE and Corr raw.", ""]
    lines[-1:-1] = precision_lines(results["config"].get("precision"))
    train = results["config"].get("train") or {}
    if train:
        lines += ["Training settings for every model: " + ", ".join(f"{k} {v}" for k, v in train.items()) + "."]
    for model, settings in (results["config"].get("per_model") or {}).items():
        lines += [f"`{model}` only: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + "."]
    if train or results["config"].get("per_model"):
        lines += ["Everything else: each model's own `train_defaults`.", ""]
    lines += composition_lines(results["config"].get("variants") or {})
    lines += data_report_lines(results.get("data_report"))
    header = ["Model"] + [metric_label(m) for m in METRICS]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    flags = results.get("flags") or {}
    for label, metrics in results["summary"].items():
        name = f"{label} {FLAG_MARK}" if flags.get(label) else label
        lines.append("| " + " | ".join([name] + [_fmt(m, metrics[m]["mean"], metrics[m]["std"] if n > 1 else None)
                                                 for m in METRICS]) + " |")
    lines.append("")
    if flags:
        lines += [f"{FLAG_MARK} Runs that did not converge or did not learn (best validation epoch = last epoch; "
                  f"or test predictions with a std below {CONSTANT_PREDICTION_FRACTION:g}× the labels'): their "
                  f"numbers understate the model.", ""]
        for label, found in flags.items():
            remedies = list(dict.fromkeys(r for flag in found for r in flag["remedy"]))
            lines.append(f"- `{label}`: {'; '.join(flag['detail'] for flag in found)}. Remedy: "
                         f"{'; or '.join(remedies)}.")
    else:
        lines.append(f"Every run's best validation epoch came before its last, and every run's test predictions "
                     f"vary (std at least {CONSTANT_PREDICTION_FRACTION:g}× the labels').")
    unknown = [r for r in results["runs"] if r.get("test_prediction_std") is None]
    if unknown:
        lines.append(f"({len(unknown)} run(s) were made by a version that did not record the spread of their test "
                     f"predictions; they are checked for the best epoch only.)")
    from benchmarks import studies
    from fusionkit import stats

    lines += stats.render(results.get("statistics"))
    from benchmarks import tuned

    lines += tuned.render(results)
    lines += studies.render(results)
    models = {label: v["model"] for label, v in results["config"]["variants"].items()}
    paper_lines = paper.render_paper_table(results["dataset"], models)
    if paper_lines:
        lines += [""] + paper_lines
    return "\n".join(lines) + "\n"


def data_report_lines(report: dict | None) -> list[str]:
    """results.md lines naming every change the data readers made (none: nothing is said)."""
    if not report:
        return []
    from fusionkit.data.errors import LoadReport

    changes = LoadReport.from_dict(report).describe()
    return ["Data changed by the readers: " + "; ".join(changes) + ".", ""] if changes else []


def precision_lines(precision: str | None) -> list[str]:
    """The autocast precision every run trained and evaluated with (results written before it was recorded: none)."""
    if precision is None:
        return []
    if precision == "fp32":
        return ["Precision: fp32 (no autocast)."]
    return [f"Precision: {precision} autocast for forward passes and losses; weights, optimizer state and "
            f"checkpoints fp32."]


def composition_lines(variants: dict) -> list[str]:
    """results.md lines naming every slot that holds another block than its default (block, plug-in, args)."""
    from fusionkit.slots import describe_composition

    lines = []
    for label, entry in variants.items():
        swapped = describe_composition(entry.get("composition") or {}, model=entry.get("model"))
        if swapped:
            lines.append(f"`{label}` composition (slot=block): {swapped}; every other slot holds its default block.")
    return lines + [""] if lines else []


def main(argv: list[str] | None = None) -> int:
    from fusionkit.diskfull import EXIT_STATUS, cli_message, is_disk_full
    from fusionkit.training.checkpoint import CheckpointError

    try:
        return run_cli(_main, argv)
    except CheckpointError as e:  # a damaged file met outside a run (e.g. while checking --resume)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if not is_disk_full(e):
            raise
        print(f"error: {cli_message(e)}", file=sys.stderr)
        return EXIT_STATUS
    except KeyboardInterrupt as e:
        from benchmarks.outdir import interrupted_message

        message, status = interrupted_message(e)
        if "--grid-worker" not in (argv if argv is not None else sys.argv[1:]):
            print(message, file=sys.stderr)  # a spawned grid worker's parent says it once for all of them
        return status


def interrupt_message(e: KeyboardInterrupt) -> str:
    """One line: where training stopped, the checkpoint, and the command-line way to continue (said once)."""
    from benchmarks.outdir import interrupted_message

    return interrupted_message(e)[0]


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    from fusionkit.training.progress import log_to_stderr

    log_to_stderr(args.log_level)
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1 (the number of seeds to run), got {args.seeds}")
    for name in ("epochs", "batch_size", "max_train_samples", "max_samples", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for name in ("lr", "encoder_lr"):
        value = getattr(args, name)
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    from fusionkit.training.distributed import resolve_device

    try:
        device = resolve_device(args.device)
    except (ValueError, RuntimeError) as e:
        raise UsageError(f"--device {args.device}: {e}") from None
    from fusionkit.training.precision import resolve_precision

    try:
        args.precision_resolved = resolve_precision(args.precision, device)
    except ValueError as e:
        raise UsageError(f"--precision {args.precision}: {e}") from None
    if args.save_interval is not None and not (args.save_interval >= 0 and math.isfinite(args.save_interval)):
        raise UsageError(f"--save-interval must be ≥ 0 seconds, got {args.save_interval}")
    if args.tiny_bert and args.text_model is not None:
        raise UsageError("--tiny-bert and --text-model are exclusive")
    from benchmarks import tuned

    tuned.apply(args)  # --from-tuning: the tuned settings become --set entries
    study = studies.STUDIES[args.study] if args.study is not None else None
    if study is not None and study.figure:  # figures (t-SNE, heat-map) come after the runs: refuse now
        from fusionkit.optional import MissingExtraError, require

        try:
            require("matplotlib", f"--study {args.study} (its figure)")
        except MissingExtraError as e:
            raise UsageError(str(e)) from None
    for other in studies.STUDIES.values():  # a study's own options given without it
        given = other.given_options(args)
        if given and other is not study:
            raise UsageError(f"{given[0]} applies to --study {other.name} only")
    if study is not None:
        code = study.run(args, argv)  # a study with its own runner and tables (e.g. probes)
        if code is not None:
            return code

    from fusionkit.encoders.bert import TextModelNotFound, load_tokenizer

    try:
        variants = plan_variants(args, lambda: encoder_depth(args.text_model, args.tiny_bert))
        tokenizer = load_tokenizer(args.text_model)
    except TextModelNotFound as e:
        raise UsageError(str(e)) from None
    out = Path(args.out) if args.out is not None else Path("runs") / args.dataset.replace(os.sep, "_")
    main_process = is_main_process()
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.workers > 1 or args.grid_worker is not None:  # workers share the grid: finished runs are kept
        args.resume = True
    main_process = main_process and args.grid_worker is None  # the process that started the workers writes
    if main_process:
        _check_out_path(out)
        from benchmarks.lock import LockHeld, check_free

        try:
            check_free(out)  # a busy --out is refused at once; the lock itself is taken after the checks
        except LockHeld as e:
            raise UsageError(str(e)) from None
    per_model, per_model_options = parse_sets(args.sets, sorted({v.model for v in variants}))
    variants = [Variant(v.label, v.model, {**v.kwargs, **per_model_options.get(v.model, {})}) for v in variants]

    features = parse_features(args.features)
    if main_process:
        from benchmarks.outdir import check_overwrite

        check_overwrite(out, resume=args.resume, overwrite=args.overwrite)  # finished runs are never replaced silently
    from fusionkit.data import DataError, load_splits

    try:
        data = load_splits(args.dataset, data_root=args.data_root, tokenizer=tokenizer, max_samples=args.max_samples,
                           seed=0, features=features)
    except DataError as e:
        raise UsageError(str(e)) from None
    data = select_modalities(data, args.modalities)
    model_kwargs: dict = {}
    if args.tiny_bert:
        from fusionkit.testing import tiny_bert_config

        model_kwargs["bert_config"] = tiny_bert_config()
    elif args.text_model is not None:  # a local directory is recorded absolute so checkpoints load from anywhere
        local = Path(args.text_model).expanduser()
        model_kwargs["text_model"] = str(local.resolve()) if local.is_dir() else args.text_model
    train_overrides = {k: v for k, v in dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                             encoder_lr=args.encoder_lr,
                                             max_train_samples=args.max_train_samples).items() if v is not None}
    # every row's model is built once (meta device) and its training settings resolved before any run starts
    try:
        checked = preflight(variants, data=data, model_kwargs=model_kwargs, train_overrides=train_overrides,
                            per_model=per_model,
                            sources=set_sources(args.sets), world_size=int(os.environ.get("WORLD_SIZE", "1")))
    except TextModelNotFound as e:
        raise UsageError(str(e)) from None
    compositions = check_compositions(checked)
    if args.resume:  # a finished or interrupted run with other settings is refused before any run starts
        for variant in variants:
            for seed in range(args.seeds):
                check_resumable(variant, seed, data, args, model_kwargs, out / variant.dirname / f"seed{seed}",
                                {**train_overrides, **per_model.get(variant.model, {})})
    # every repair the readers made, in the log (and results.md); after the checks, so a refusal stays one line
    for line in data.info.report.describe():
        print(f"[data] {args.dataset}: {line}", file=sys.stderr)
    lock = None
    if main_process:
        _check_out_dir(out)
        from benchmarks.lock import DirectoryLock, LockHeld

        try:
            lock = DirectoryLock(out, ["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])])
            lock.acquire()
        except LockHeld as e:
            raise UsageError(str(e)) from None
        from benchmarks.outdir import remove_orphans

        remove_orphans(out)  # temporary files of a killed earlier process (only ever removed under the lock)
    try:
        if args.workers > 1 or args.grid_worker is not None:
            code = run_grid(args, argv, variants, data, model_kwargs, train_overrides, per_model, out,
                            {info.label: info.plan for info in checked})
            if code is not None:
                return code
        return _run_all(args, variants, checked, data, model_kwargs, train_overrides, per_model, per_model_options,
                        out, main_process, compositions)
    finally:
        if lock is not None:
            lock.release()


def _run_all(args, variants, checked, data, model_kwargs, train_overrides, per_model, per_model_options, out,
             main_process, compositions) -> int:
    from fusionkit.encoders.bert import TextModelNotFound
    from fusionkit.training import ModelBuildError

    seeds = list(range(args.seeds))
    plans = {info.label: info.plan for info in checked}
    runs, run_dirs = [], {}
    for variant in variants:
        for seed in seeds:
            run_dir = out / variant.dirname / f"seed{seed}"
            if main_process:
                print(f"[run] {variant.label} seed {seed} → {run_dir}", file=sys.stderr)
            try:
                result = run_one(variant, seed, data, args, model_kwargs, run_dir,
                                 {**train_overrides, **per_model.get(variant.model, {})}, plans.get(variant.label))
            except (ModelBuildError, TextModelNotFound) as e:
                raise UsageError(str(e)) from None
            except ValueError as e:  # a model factory rejecting its settings, e.g. --layers out of range
                raise UsageError(f"{variant.label}: {e}") from None
            runs.append({"model": variant.label, "seed": seed, "best_epoch": result["best_epoch"],
                         "epochs_run": result.get("epochs_run"),
                         "test_prediction_std": result.get("test_prediction_std"),
                         "test_label_std": result.get("test_label_std"),
                         "valid": result["valid"], "test": result["test"]})
            run_dirs.setdefault(variant.label, {})[seed] = run_dir
    labels = [v.label for v in variants]
    results = {
        "dataset": args.dataset,
        "simulated": bool(data.info.simulated),
        "channels": data.info.channel_kinds(),
        "modalities": ",".join(data.info.modalities),
        "text_model": "tiny random BERT (tests)" if args.tiny_bert else (args.text_model or "bundled MiniLM-L6"),
        "seeds": seeds,
        "config": {"study": args.study, "variants": {v.label: {"model": v.model, "kwargs": _json_clean(v.kwargs),
                                                               "composition": compositions[v.label]}
                                                       for v in variants},
                   "train": train_overrides, "per_model": {m: {**per_model.get(m, {}), **per_model_options.get(m, {})}
                                 for m in sorted({*per_model, *per_model_options})},
                   "max_samples": args.max_samples, "precision": args.precision_resolved,
                   **({"features": sorted(args.features)} if args.features else {})},
        "data_report": data.info.report.to_dict(),
        "runs": runs,
        "summary": summarize(runs, labels),
        "flags": convergence_flags(runs, checked, args),
    }
    if not main_process:
        return 0
    add_statistics(results, runs, labels, run_dirs, args.reference)
    from benchmarks import tuned

    tuned.record_provenance(results, args)
    from fusionkit.training.checkpoint import atomic_write_bytes, atomic_write_json

    study = studies.STUDIES[args.study] if args.study is not None else None
    if study is not None:
        analysis = study.analyse(run_dirs, lambda: encoder_depth(args.text_model, args.tiny_bert))
        if analysis is not None:
            results["study_results"] = analysis

    atomic_write_json(out / "results.json", results)
    atomic_write_bytes(out / "results.md", render_markdown(results).encode())
    if study is not None:
        study.finish(run_dirs, out, seeds[0])
    print(render_markdown(results))
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
