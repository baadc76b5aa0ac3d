"""``python -m benchmarks.run --study probes``: which information each model (or composition) can use, measured on
the fusion probes (:mod:`fusionkit.data.probes`), whose hidden rule and therefore attainable gain are known.

For every probe and seed:

* **floor**: ``text`` trained on the probe's target (what the text alone can reach);
* **ceiling**: an oracle that applies the probe's true hidden rule (flip the sign where the hidden variable flips
  the target) to the test predictions of ``text`` trained on the original labels — everything attainable with
  this text model plus perfect use of the cue. ``text`` on ``probe-null`` is trained on the original labels
  (its target is the real label), so those runs serve as the oracle's input;
* each model's **share of the attainable gain**: ``(model − floor) / (ceiling − floor)`` on MAE and Acc2 (non0),
  per seed, then mean with a 95 % t-interval over seeds. 0 = no better than text, 1 = as good as the oracle.

``probe-redundant`` and ``probe-null`` change no target, so their ceiling equals their floor; their gain is divided
by the attainable gain of ``probe-unique-a`` of the same seed (the *reference gap*), and about 0 is expected: a
positive share there is overfitting to a cue that carries nothing new.

A cell is **clearly above 0** when its mean share is at least :data:`CLEAR_SHARE` and the lower end of its 95 %
interval is above 0 (so it needs at least two seeds). ``python -m benchmarks.probes compare FULL FAST`` lists the
cells on which two matrices disagree by that criterion (exit status 1 when any do).

``--fast``: the text encoder frozen in every model that accepts ``encoder_mode`` (floors and ceilings too), at
most :data:`FAST_MAX_SAMPLES` examples per split unless ``--max-samples`` is given, and :data:`FAST_TRAIN` (every
model's learning rate and epochs) unless ``--lr`` / ``--epochs`` are given; the floor's head gets one hidden layer
(:data:`FAST_FLOOR_HEAD`) unless ``--set text.head=...`` is given; and a model whose own batch is above
:data:`FAST_BATCH_SIZE` trains at that size (:func:`cap_fast_batch`) unless a batch size is given.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.studies import Study, register_study
from fusionkit.cli import UsageError

PROBE_METRICS = ("mae", "acc2_non0")
METRIC_TITLES = {"mae": "MAE", "acc2_non0": "Acc2 (non0)"}
CLEAR_SHARE = 0.10
# The smallest attainable gap (ceiling better than floor, in every seed) a share is divided by; below it the text
# model learnt too little for the cue to be worth anything and the share is not reported.
MIN_GAP = {"mae": 0.02, "acc2_non0": 0.01}
FAST_MAX_SAMPLES = 600
# With the encoder frozen only heads and fusion layers train: at the fine-tuning rates of text (5e-5), mhmf and
# misa (1e-4) and 4 epochs the text floor does not learn (probe-unique-a, seed 0: test MAE 1.415, Acc2 52.9 %, every
# cell "–"); at 1e-3 for 10 epochs it does (probe-null: MAE 1.243, Acc2 70.2 %).
FAST_TRAIN = {"lr": 1e-3, "epochs": 10}
# With the encoder frozen, text's linear read-out of the mean-pooled word vectors is a weaker text model than any
# fusion model's own text path (probe-null, seed 0: text MAE 1.243, tfn 0.927, mult 0.995), so every model looked
# like it used the cue on probe-null (shares 1.6 to 2.0). One hidden layer in the floor's head closes that gap
# (text MAE 0.956, Acc2 79.6 %); --set text.head=... replaces it.
FAST_FLOOR_HEAD = {"name": "regression_head", "d_hidden": 128}
# At its own batch of 128, mult gets 5 optimizer steps an epoch on 600 examples, 50 in the fast budget. On
# benchmarks.timing_toy (the timing rule on random utterances, variable lengths, the probes' cue strength 1.4)
# 300 steps of 32 reach 94.5 / 90.0 % Acc2 (seeds 0 / 1) and 50 steps of 128 stay at chance (49.1 / 49.9 %).
# So in fast mode no model trains at a batch above this.
FAST_BATCH_SIZE = 32
FLOOR = "text"
BASE_PROBE = "probe-null"  # its target is the original label: text there is "text trained on the original labels"
REFERENCE_PROBE = "probe-unique-a"


# -- the ceiling and the share ----------------------------------------------------------------------------------
def oracle_predictions(ids, text_predictions, table: dict) -> np.ndarray:
    """The true hidden rule applied to ``text_predictions`` (of ``text`` trained on the original labels): the sign
    is flipped exactly where the probe flips the target. ``table``: :func:`fusionkit.data.probes.hidden_table`."""
    flips = np.array([table[i].hidden.flip for i in ids])
    preds = np.asarray(text_predictions, dtype=np.float64)
    return np.where(flips, -preds, preds)


def probe_metrics(preds, labels) -> dict:
    from fusionkit.metrics import compute_metrics

    return compute_metrics(np.asarray(preds), np.asarray(labels), names=PROBE_METRICS)


def ceiling_metrics(ids, text_predictions, table: dict) -> dict:
    """Metrics of :func:`oracle_predictions` against the probe's targets."""
    labels = np.array([table[i].segment.label for i in ids])
    return probe_metrics(oracle_predictions(ids, text_predictions, table), labels)


def interval(values) -> tuple[float | None, float | None]:
    """``(mean, half-width of the 95 % t-interval)``; the half-width is ``None`` for a single value."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, None
    from scipy.stats import t

    return mean, float(t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))


def clearly_above_zero(mean: float | None, half_width: float | None) -> bool:
    """At least :data:`CLEAR_SHARE` of the attainable gain, with the 95 % interval above 0 (≥ 2 seeds)."""
    return mean is not None and half_width is not None and mean >= CLEAR_SHARE and mean - half_width > 0


# -- reading runs -------------------------------------------------------------------------------------------------
def read_predictions(run_dir: Path) -> tuple[list, np.ndarray, np.ndarray]:
    """``(ids, labels, predictions)`` of a run's ``test_predictions.csv``."""
    from fusionkit.training import PREDICTIONS_FILE

    with open(run_dir / PREDICTIONS_FILE, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return ([r["id"] for r in rows], np.array([float(r["label"]) for r in rows]),
            np.array([float(r["prediction"]) for r in rows]))


def analyse(records: dict, probes: list, labels: list, seeds: list) -> dict:
    """The capability matrix from ``records[probe][seed] = {"floor": m, "ceiling": m, "models": {label: m}}``
    (``m``: ``{metric: value}``)."""
    def gap(probe, seed, metric):
        """The attainable gain as ``ceiling − floor`` (negative for MAE), or 0 when it is below MIN_GAP."""
        r = records[probe][seed]
        value = r["ceiling"][metric] - r["floor"][metric]
        return value if abs(value) >= MIN_GAP[metric] and (value < 0) == (metric == "mae") else 0.0

    def attainable(probe, metric):
        return all(gap(probe, s, metric) != 0.0 for s in seeds)

    from fusionkit.data.probes import PROBES

    flipping = [p for p in probes if PROBES[p].flips]
    reference = REFERENCE_PROBE if REFERENCE_PROBE in probes else (flipping[0] if flipping else None)
    out = {"floors": {}, "ceilings": {}, "matrix": {}, "reference_probe": reference, "unattainable": {}}
    for probe in probes:
        for key in ("floor", "ceiling"):
            out[key + "s"][probe] = {m: _stats([records[probe][s][key][m] for s in seeds]) for m in PROBE_METRICS}
    for metric in PROBE_METRICS:
        # a probe whose rule changes no target is measured against the reference probe's gap
        relative = {p: (p if p in flipping else reference) for p in probes}
        out["unattainable"][metric] = [p for p in probes if relative[p] is None or not attainable(relative[p], metric)]
    for label in labels:
        row = out["matrix"][label] = {}
        for probe in probes:
            row[probe] = {}
            for metric in PROBE_METRICS:
                against = probe if probe in flipping else reference
                gains = [records[probe][s]["models"][label][metric] - records[probe][s]["floor"][metric]
                         for s in seeds]
                usable = probe not in out["unattainable"][metric]
                shares = [g / gap(against, s, metric) for g, s in zip(gains, seeds)] if usable else [None] * len(seeds)
                mean, half = interval(shares)
                row[probe][metric] = {"share": mean, "half_width": half, "values": shares,
                                      "gain": float(np.mean(gains)), "relative_to": against,
                                      "clearly_above_0": clearly_above_zero(mean, half)}
    return out


def _stats(values) -> dict:
    mean, half = interval(values)
    return {"mean": mean, "half_width": half, "values": [float(v) for v in values]}


# -- rendering ----------------------------------------------------------------------------------------------------
def _cell(entry: dict) -> str:
    if entry["share"] is None:
        return "–"
    text = f"{entry['share']:.2f}" + (f" ± {entry['half_width']:.2f}" if entry["half_width"] is not None else "")
    return text + (" ✓" if entry["clearly_above_0"] else "")


def _raw(stats: dict, metric: str) -> str:
    scale, digits = (1.0, 3) if metric == "mae" else (100.0, 1)
    text = f"{stats['mean'] * scale:.{digits}f}"
    return text + (f" ± {stats['half_width'] * scale:.{digits}f}" if stats["half_width"] is not None else "")


def render_markdown(results: dict) -> str:
    from fusionkit.data.probes import PROBES

    pr = results["probe_results"]
    probes, seeds = results["probes"], results["seeds"]
    n = len(seeds)
    floor_head = (results.get("variants") or {}).get(results.get("floor"), {}).get("kwargs", {}).get("head") \
        if results["fast"] else None
    lines = [f"# Fusion probes — capability matrix ({'fast' if results['fast'] else 'full'} mode)", "",
             "Datasets: real CMU-MOSI transcripts and official split with SIMULATED acoustic and visual channels "
             "carrying a planted word-level cue (fusionkit.data.probes); the target is the real label or its "
             "negation by the probe's rule. Not MOSI results.", "",
             f"Seeds: {', '.join(map(str, seeds))}; text model: {results['text_model']}; max samples per split: "
             f"{results['max_samples'] or 'all'}; "
             + ("text encoder frozen in every model that accepts it; " if results["fast"] else "")
             + (f"**cue strength {results['cue_strength']:g}, not the calibrated one**; "
                if results.get("cue_strength_calibrated") is False else "")
             + (f"floor `{results['floor']}` with head {json.dumps(floor_head)}; " if floor_head else "")
             + f"wall time of this invocation {results['wall_time_s']:.0f} s (runs skipped by --resume cost none).", ""]
    for label, settings in results.get("per_model", {}).items():
        lines.append(f"`{label}`: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + ".")
    from benchmarks.run import composition_lines

    lines += composition_lines(results.get("variants") or {})
    lines += ["", "| probe | rule |", "|---|---|"] + [f"| `{p}` | {PROBES[p].summary} |" for p in probes]
    for metric in PROBE_METRICS:
        lines += ["", f"## Share of the attainable gain — {METRIC_TITLES[metric]}", "",
                  "(model − floor) / (ceiling − floor) per seed; mean"
                  + (" ± 95 % t-interval half-width" if n > 1 else " (1 seed: no interval)")
                  + f"; ✓ = clearly above 0 (mean ≥ {CLEAR_SHARE:g} and interval above 0). "
                  f"{', '.join(f'`{p}`' for p in probes if not PROBES[p].flips)}: relative to the gap of "
                  f"`{pr['reference_probe']}` (their own ceiling equals their floor; about 0 expected).", "",
                  "| model | " + " | ".join(probes) + " |", "|---|" + "---|" * len(probes)]
        for label, row in pr["matrix"].items():
            lines.append(f"| {label} | " + " | ".join(_cell(row[p][metric]) for p in probes) + " |")
        lines.append(f"| *floor (text on the target)* | "
                     + " | ".join(_raw(pr["floors"][p][metric], metric) for p in probes) + " |")
        lines.append(f"| *ceiling (oracle on text)* | "
                     + " | ".join(_raw(pr["ceilings"][p][metric], metric) for p in probes) + " |")
        if pr["unattainable"][metric]:
            lines += ["", f"– : no attainable gain on {', '.join(f'`{p}`' for p in pr['unattainable'][metric])} "
                          f"(the ceiling is not better than the floor by {MIN_GAP[metric]:g} in every seed: the text "
                          f"model learnt too little for the cue to be worth anything; train longer or on more "
                          f"samples)."]
    lines += ["", "Floor and ceiling rows: the raw metric (MAE; Acc2 in %), mean ± 95 % half-width over seeds.",
              "`heatmap.png`: the same shares as colours. Per-probe tables of every metric: `<probe>/results.md`."]
    return "\n".join(lines) + "\n"


def plot_heatmap(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pr = results["probe_results"]
    probes, labels = results["probes"], list(pr["matrix"])
    fig, axes = plt.subplots(1, len(PROBE_METRICS), figsize=(1.6 * len(probes) * len(PROBE_METRICS) + 2,
                                                                0.6 * len(labels) + 2), squeeze=False)
    image = None
    for ax, metric in zip(axes[0], PROBE_METRICS):
        values = np.array([[np.nan if pr["matrix"][m][p][metric]["share"] is None else pr["matrix"][m][p][metric]
                            ["share"] for p in probes] for m in labels])
        image = ax.imshow(values, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        for i, m in enumerate(labels):
            for j, p in enumerate(probes):
                ax.text(j, i, _cell(pr["matrix"][m][p][metric]).replace(" ± ", "\n±"), ha="center", va="center",
                        fontsize=7)
        ax.set_xticks(range(len(probes)), [p.removeprefix("probe-") for p in probes], rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_title(f"share of attainable gain — {METRIC_TITLES[metric]}")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle(f"fusion probes ({'fast' if results['fast'] else 'full'} mode, {len(results['seeds'])} seed(s)); "
                 "simulated channels on real MOSI text", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def compare(full: dict, fast: dict) -> list[str]:
    """Cells (model, probe, metric) present in both matrices on which "clearly above 0" differs."""
    out = []
    a, b = full["probe_results"]["matrix"], fast["probe_results"]["matrix"]
    for label in a:
        for probe in a[label]:
            for metric in PROBE_METRICS:
                x, y = a[label][probe].get(metric), b.get(label, {}).get(probe, {}).get(metric)
                if x is None or y is None:
                    continue
                if x["clearly_above_0"] != y["clearly_above_0"]:
                    out.append(f"{label} × {probe} ({METRIC_TITLES[metric]}): full {_cell(x)}, fast {_cell(y)}")
    return out


# -- the study ----------------------------------------------------------------------------------------------------
def resolve_probes(spec: str | None) -> list[str]:
    """``--probes`` (comma-separated; default all): always with ``probe-null``, the control and the oracle's base."""
    from fusionkit.data.probes import PROBE_NAMES

    if spec is None or spec.strip() == "all":
        return list(PROBE_NAMES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for name in names:
        if name not in PROBE_NAMES:
            raise UsageError(f"--probes: unknown probe {name!r}; the probes are {', '.join(PROBE_NAMES)}")
    wanted = set(names) | {BASE_PROBE}
    return [p for p in PROBE_NAMES if p in wanted]


def _refuse_unsupported(args) -> None:
    given = [flag for flag, value in (("--dataset", args.dataset != "mosi-sim"), ("--features", args.features),
                                      ("--modalities", args.modalities), ("--layers", args.layers),
                                      ("--no-restitution", args.no_restitution)) if value]
    if given:
        raise UsageError(f"{given[0]} does not apply to --study probes, which runs every probe dataset with all "
                         f"three channels; drop {given[0]} (use --set MODEL.KEY=VALUE for model options)")


def run_study(args, argv) -> int:
    """The ``--study probes`` command: train floors and models on every probe, then write the matrix."""
    from fusionkit.data import probes as probe_data

    strength = getattr(args, "cue_strength", None)
    if strength is not None and not (math.isfinite(strength) and strength > 0):
        raise UsageError(f"--cue-strength must be a positive number of latent standard deviations, got {strength:g}")
    if strength == probe_data.CUE_STRENGTH:  # the calibrated strength: the same runs as without the flag
        args = copy.copy(args)
        args.cue_strength = None
    with probe_data.cue_strength(strength):
        return _run_study(args, argv)


def _run_study(args, argv) -> int:
    from benchmarks import run as bench
    from benchmarks.preflight import preflight
    from fusionkit.data import DataError, load_splits
    from fusionkit.encoders.bert import TextModelNotFound, load_tokenizer
    from fusionkit.training import ModelBuildError, accepted_kwargs

    started = time.perf_counter()
    _refuse_unsupported(args)
    probes = resolve_probes(args.probes)
    models = bench.resolve_models(args.models)
    encoder_mode = args.encoder_mode or ("frozen" if args.fast else None)
    max_samples = args.max_samples if args.max_samples is not None or not args.fast else FAST_MAX_SAMPLES
    args = copy.copy(args)
    args.max_samples = max_samples
    per_model, per_model_options = bench.parse_sets(args.sets, sorted({*models, FLOOR}))

    def variant(model: str):
        accepted = accepted_kwargs(model)
        kwargs = {"encoder_mode": encoder_mode} if encoder_mode and (accepted is None or "encoder_mode" in accepted) \
            else {}
        if args.fast and model == FLOOR:
            kwargs["head"] = dict(FAST_FLOOR_HEAD)
        return bench.Variant(model, model, {**kwargs, **per_model_options.get(model, {})})

    variants = [variant(m) for m in models]
    floor = next((v for v in variants if v.model == FLOOR), None) or variant(FLOOR)
    to_train = variants if floor in variants else [floor, *variants]
    try:
        tokenizer = load_tokenizer(args.text_model)
    except TextModelNotFound as e:
        raise UsageError(str(e)) from None
    out = Path(args.out) if args.out is not None else Path("runs") / ("probes-fast" if args.fast else "probes")
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.workers > 1 or args.grid_worker is not None:  # workers share the runs: finished ones are kept
        args.resume = True
    worker = args.grid_worker is not None
    from benchmarks.lock import DirectoryLock, LockHeld, check_free

    if not worker:
        bench._check_out_path(out)
        try:
            check_free(out)
        except LockHeld as e:
            raise UsageError(str(e)) from None
    datasets = {}
    for probe in probes:
        try:
            datasets[probe] = load_splits(probe, data_root=args.data_root, tokenizer=tokenizer,
                                          max_samples=max_samples, seed=0)
        except DataError as e:
            raise UsageError(str(e)) from None
    model_kwargs: dict = {}
    if args.tiny_bert:
        from fusionkit.testing import tiny_bert_config

        model_kwargs["bert_config"] = tiny_bert_config()
    elif args.text_model is not None:
        local = Path(args.text_model).expanduser()
        model_kwargs["text_model"] = str(local.resolve()) if local.is_dir() else args.text_model
    train_overrides = {k: v for k, v in dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                             encoder_lr=args.encoder_lr,
                                             max_train_samples=args.max_train_samples).items() if v is not None}
    if args.fast:
        train_overrides = {**FAST_TRAIN, **train_overrides}
    first = datasets[probes[0]]
    try:
        checked = preflight(to_train, data=first, model_kwargs=model_kwargs, train_overrides=train_overrides,
                            per_model=per_model, sources=bench.set_sources(args.sets))
        if args.fast and cap_fast_batch(checked, per_model, given=args.batch_size is not None):
            checked = preflight(to_train, data=first, model_kwargs=model_kwargs, train_overrides=train_overrides,
                                per_model=per_model, sources=bench.set_sources(args.sets))
        compositions = bench.check_compositions(checked)
    except (ModelBuildError, TextModelNotFound) as e:
        raise UsageError(str(e)) from None
    if worker:  # the process that started the workers holds the lock and writes the matrix
        return _work(args, probes, to_train, datasets, model_kwargs, train_overrides, per_model, out)
    bench._check_out_dir(out)
    lock = DirectoryLock(out, ["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])])
    try:
        lock.acquire()
    except LockHeld as e:
        raise UsageError(str(e)) from None
    try:
        if args.workers > 1:
            from benchmarks import workers

            workers.run_workers(list(argv if argv is not None else sys.argv[1:]), args.workers, args.threads)
        return _run(args, probes, variants, floor, to_train, datasets, checked, compositions, model_kwargs,
                    train_overrides, per_model, per_model_options, out, started)
    finally:
        lock.release()


def cap_fast_batch(checked, per_model: dict, *, given: bool) -> list[str]:
    """``--fast``: a model whose own batch is larger than :data:`FAST_BATCH_SIZE` trains at that size (set in
    ``per_model``), so that every model gets at least the same number of optimizer steps; not when a batch size
    was given (``--batch-size`` or ``--set MODEL.batch_size``), and not for a model trained in stages, whose stages
    keep their own batch sizes (ICCN's DCCA stage needs a batch larger than its 50-d embeddings). Returns the
    models it capped."""
    capped = []
    for info in checked:
        own = info.train_defaults.get("batch_size")
        if given or "batch_size" in per_model.get(info.model, {}) or info.plan is None or info.plan.stages:
            continue
        if own is not None and own > FAST_BATCH_SIZE:
            per_model.setdefault(info.model, {})["batch_size"] = FAST_BATCH_SIZE
            capped.append(info.model)
    return capped


def _tasks(probes: list, to_train: list, seeds: list, out: Path) -> list:
    """Every run of the study, in training order: (probe, variant, seed, run directory); ``probe-null`` first in
    each seed, because its ``text`` runs are the oracle's input."""
    order = [BASE_PROBE] + [p for p in probes if p != BASE_PROBE]
    return [(probe, v, seed, out / probe / v.dirname / f"seed{seed}") for seed in seeds for probe in order
            for v in to_train]


def _probe_args(args, probe: str):
    probe_args = copy.copy(args)
    probe_args.dataset, probe_args.study, probe_args.features = probe, "probes", []
    return probe_args


def _train(task, args, datasets, model_kwargs, train_overrides, per_model) -> dict:
    from benchmarks import run as bench

    probe, v, seed, run_dir = task
    print(f"[run] {probe}: {v.label} seed {seed} → {run_dir}", file=sys.stderr)
    try:
        return bench.run_one(v, seed, datasets[probe], _probe_args(args, probe), model_kwargs, run_dir,
                             {**train_overrides, **per_model.get(v.model, {})})
    except ValueError as e:
        raise UsageError(f"{v.label} on {probe}: {e}") from None


def _work(args, probes, to_train, datasets, model_kwargs, train_overrides, per_model, out) -> int:
    """One grid worker (``--grid-worker ID``): train the study's runs that no live worker holds."""
    from benchmarks import workers

    tasks = _tasks(probes, to_train, list(range(args.seeds)), out)
    workers.work([(f"{probe}: {v.label}", seed, d) for probe, v, seed, d in tasks],
                 lambda i, took_over: _train(tasks[i], args, datasets, model_kwargs, train_overrides, per_model),
                 heartbeat=args.heartbeat, grace=args.grace, worker=args.grid_worker)
    return 0


def _run(args, probes, variants, floor, to_train, datasets, checked, compositions, model_kwargs, train_overrides,
         per_model, per_model_options, out, started) -> int:
    from benchmarks import run as bench
    from fusionkit.data import probes as probe_data
    from fusionkit.data.probes import hidden_table
    from fusionkit.training.checkpoint import atomic_write_bytes, atomic_write_json

    seeds = list(range(args.seeds))
    runs = {p: [] for p in probes}
    dirs = {p: {} for p in probes}
    for task in _tasks(probes, to_train, seeds, out):
        probe, v, seed, run_dir = task
        result = _train(task, args, datasets, model_kwargs, train_overrides, per_model)
        runs[probe].append({"model": v.label, "seed": seed, "best_epoch": result["best_epoch"],
                            "epochs_run": result.get("epochs_run"),
                            "test_prediction_std": result.get("test_prediction_std"),
                            "test_label_std": result.get("test_label_std"),
                            "valid": result["valid"], "test": result["test"]})
        dirs[probe][(v.label, seed)] = run_dir
    records = {p: {} for p in probes}
    for probe in probes:
        table = hidden_table(probe, data_root=args.data_root)
        for seed in seeds:
            ids, _, base = read_predictions(dirs[BASE_PROBE][(floor.label, seed)])
            by_label = {r["model"]: r for r in runs[probe] if r["seed"] == seed}
            records[probe][seed] = {
                "floor": {m: by_label[floor.label]["test"][m] for m in PROBE_METRICS},
                "ceiling": ceiling_metrics(ids, base, table),
                "models": {v.label: {m: by_label[v.label]["test"][m] for m in PROBE_METRICS} for v in variants}}
    labels = [v.label for v in variants]
    results = {
        "study": "probes", "fast": bool(args.fast), "probes": probes, "seeds": seeds,
        "text_model": "tiny random BERT (tests)" if args.tiny_bert else (args.text_model or "bundled MiniLM-L6"),
        "max_samples": args.max_samples, "train": train_overrides, "cue_strength": probe_data.CUE_STRENGTH,
        "cue_strength_calibrated": getattr(args, "cue_strength", None) is None,
        "per_model": {m: {**per_model.get(m, {}), **per_model_options.get(m, {})}
                      for m in sorted({*per_model, *per_model_options})},
        "variants": {v.label: {"model": v.model, "kwargs": bench._json_clean(v.kwargs),
                               "composition": compositions[v.label]} for v in to_train},
        "floor": floor.label,
        "datasets": {p: {"description": datasets[p].info.description, "channels": datasets[p].info.channel_kinds()}
                     for p in probes},
        "per_probe": {p: {"summary": bench.summarize(runs[p], [v.label for v in to_train]),
                          "flags": bench.convergence_flags(runs[p], checked, args), "runs": runs[p]} for p in probes},
        "records": {p: {str(s): r for s, r in by_seed.items()} for p, by_seed in records.items()},
        "probe_results": analyse(records, probes, labels, seeds),
        "wall_time_s": time.perf_counter() - started,
    }
    for probe in probes:  # each probe's plain results table, as benchmarks.run writes it for one dataset
        plain = {"dataset": probe, "simulated": True, "channels": results["datasets"][probe]["channels"],
                 "modalities": "t,a,v", "text_model": results["text_model"], "seeds": seeds,
                 "config": {"study": None, "variants": results["variants"], "train": train_overrides,
                            "per_model": results["per_model"], "max_samples": args.max_samples},
                 "runs": runs[probe], "summary": results["per_probe"][probe]["summary"],
                 "flags": results["per_probe"][probe]["flags"]}
        atomic_write_bytes(out / probe / "results.md", bench.render_markdown(plain).encode())
    atomic_write_json(out / "results.json", results)
    text = render_markdown(results)
    atomic_write_bytes(out / "results.md", text.encode())
    plot_heatmap(results, out / "heatmap.png")
    print(text)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'heatmap.png'}", file=sys.stderr)
    return 0


def _slope(change: np.ndarray, ideal: np.ndarray) -> float | None:
    """Least-squares slope through 0 of ``change`` on ``ideal``: 1 = the change the rule asks for, 0 = none."""
    denom = float(np.sum(ideal * ideal))
    return float(np.sum(change * ideal) / denom) if len(ideal) and denom > 0 else None


def cue_effect(run_dir, *, data_root=None) -> dict:
    """How a trained probe run reacts to its cue: the test split predicted as generated and with every cue
    removed (strength 0, all else equal). ``change`` = prediction with cue − without.

    - ``mean_abs_change_cued`` / ``_uncued``: mean |change| on test segments with / without a cue. 0 on cued
      segments: the model does not react to the cue at all (a dead path, or one that learnt to ignore it).
    - ``flip_slope``: on segments whose target the cue flips, the slope of ``change`` on ``−2 × prediction
      without cue`` (the change that turns the prediction into its negation): 1 = the rule fully used, 0 = not at
      all. ``keep_slope``: the same on cued segments the rule does not flip (should be 0).
    A model can react to a cue (a large change) and still not use it (slope about 0): it reads the cue but has
    not learnt what it means."""
    from fusionkit.data import load_splits
    from fusionkit.data import probes as probe_data
    from fusionkit.inference import load
    from fusionkit.schemas import RUN_SPEC, load_checked

    run_dir = Path(run_dir)
    spec = load_checked(run_dir / "run.json", RUN_SPEC)
    probe = spec["dataset"]
    if probe not in probe_data.PROBES:
        raise ValueError(f"{run_dir} is a run on {probe!r}, not on a probe ({', '.join(probe_data.PROBES)})")
    predictor = load(run_dir / "best")
    strength = spec.get("cue_strength")
    outputs = {}
    for name, value in (("cue", strength), ("none", 0.0)):
        with probe_data.cue_strength(value):
            test = load_splits(probe, data_root=data_root, tokenizer=predictor.tokenizer,
                               max_samples=spec["max_samples"], seed=0).splits["test"]
        outputs[name] = predictor.evaluate(test)
    with_cue, without = outputs["cue"], outputs["none"]
    if list(with_cue.ids) != list(without.ids):
        raise RuntimeError("the test split's order differs between the two generations")
    table = probe_data.hidden_table(probe, data_root=data_root)
    hidden = [table[i].hidden for i in with_cue.ids]
    cued = np.array([bool(h.acoustic or h.visual) for h in hidden])
    flipped = np.array([h.flip for h in hidden])
    pa, pb = np.asarray(with_cue.predictions, float), np.asarray(without.predictions, float)
    labels = np.asarray(with_cue.labels, float)
    change = pa - pb

    def mean(x):
        return float(np.mean(x)) if len(x) else None

    return {"run": str(run_dir), "probe": probe, "model": spec["model"], "seed": spec["seed"],
            "cue_strength": strength if strength is not None else probe_data.CUE_STRENGTH,
            "n_test": int(len(pa)), "n_cued": int(cued.sum()), "n_flipped": int(flipped.sum()),
            "mean_abs_change_cued": mean(np.abs(change[cued])),
            "mean_abs_change_uncued": mean(np.abs(change[~cued])),
            "prediction_std": float(pa.std()),
            "flip_slope": _slope(change[flipped], -2 * pb[flipped]),
            "keep_slope": _slope(change[cued & ~flipped], -2 * pb[cued & ~flipped]),
            "mae_with_cue": float(np.mean(np.abs(pa - labels))),
            "mae_without_cue": float(np.mean(np.abs(pb - labels)))}


def _effect_line(e: dict) -> str:
    def f(x):
        return "–" if x is None else f"{x:.3f}"

    return (f"| {e['model']} | {e['probe']} | {e['seed']} | {e['cue_strength']:g} | {f(e['mean_abs_change_cued'])} | "
            f"{f(e['mean_abs_change_uncued'])} | {f(e['prediction_std'])} | {f(e['flip_slope'])} | "
            f"{f(e['keep_slope'])} | {f(e['mae_with_cue'])} / {f(e['mae_without_cue'])} |")


EFFECT_HEADER = ["| model | probe | seed | cue strength | mean abs change, cued | uncued | prediction std | flip slope "
                 "| keep slope | MAE with / without cue |", "|---|---|---|---|---|---|---|---|---|---|"]


def _cue_effect_command(args) -> int:
    runs = [Path(r) for r in args.runs]
    missing = [str(r) for r in runs if not (r / "run.json").is_file() or not (r / "best").is_dir()]
    if missing:  # checked for every run before the first prediction
        print(f"error: not a finished probe run with its best/ weights: {', '.join(missing)}; pass "
              f"OUT/<probe>/<model>/seed<k> of a --study probes run", file=sys.stderr)
        return 2
    records, failed = [], []
    print("\n".join(EFFECT_HEADER))
    for run in runs:  # one run that cannot be read does not cost the others
        try:
            records.append(cue_effect(run, data_root=args.data_root))
        except ValueError as e:  # CheckpointError included: a damaged or mismatched checkpoint
            failed.append(str(run))
            print(f"error: {run}: {e}", file=sys.stderr)
            continue
        print(_effect_line(records[-1]), flush=True)
        if args.json:  # rewritten after every run: an interrupted call keeps what it measured
            Path(args.json).write_text(json.dumps(records, indent=2))
    if failed:
        print(f"{len(failed)} of {len(runs)} runs could not be measured: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list | None = None) -> int:
    """``python -m benchmarks.probes compare FULL_DIR FAST_DIR``: the cells whose "clearly above 0" differs.
    ``python -m benchmarks.probes cue-effect RUN_DIR...``: how trained probe runs react to their cue."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probes", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare", help="agreement of two capability matrices (e.g. full vs --fast)")
    cmp.add_argument("full")
    cmp.add_argument("fast")
    eff = sub.add_parser("cue-effect", help="predict a probe run's test split with and without its cue")
    eff.add_argument("runs", nargs="+", help="run directories (OUT/<probe>/<model>/seed<k>) of a --study probes run")
    eff.add_argument("--data-root", default=None, help="data root (default: $FUSIONKIT_DATA or ./data)")
    eff.add_argument("--json", default=None, help="also write the records to this JSON file")
    args = parser.parse_args(argv)
    if args.command == "cue-effect":
        return _cue_effect_command(args)
    loaded = []
    for where in (args.full, args.fast):
        path = Path(where) / "results.json" if Path(where).is_dir() else Path(where)
        if not path.is_file():
            print(f"error: {path} does not exist; pass the --out directory of a --study probes run", file=sys.stderr)
            return 2
        loaded.append(json.loads(path.read_text()))
    cells = sum(len(row) * len(PROBE_METRICS) for row in loaded[0]["probe_results"]["matrix"].values())
    disagree = compare(*loaded)
    for line in disagree:
        print(line)
    print(f"{cells - len(disagree)} of {cells} cells agree on 'clearly above 0' (mean share ≥ {CLEAR_SHARE:g}, "
          f"95 % interval above 0)")
    return 1 if disagree else 0


# Above the study class on purpose: run as a script, this module is also imported as benchmarks.probes (through
# benchmarks.studies), which registers the study; registering it here a second time would be refused.
if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())


class ProbesStudy(Study):
    """Any ``--models`` over the fusion probes: floors, ceilings and the capability matrix (its own runner)."""

    name = "probes"
    figure = True  # heatmap.png

    def add_arguments(self, parser) -> None:
        parser.add_argument("--fast", action="store_true",
                            help="--study probes: frozen text encoder (where a model accepts it), at most 600 "
                                 "examples per split and lr 1e-3 for 10 epochs, unless --max-samples, --lr or "
                                 "--epochs are given")
        parser.add_argument("--probes", default=None, metavar="P1,P2",
                            help="--study probes: the probes to run (default: all; probe-null is always included)")
        parser.add_argument("--cue-strength", type=float, default=None, metavar="X",
                            help="--study probes: the planted cue's strength in latent standard deviations (default: "
                                 "the calibrated fusionkit.data.probes.CUE_STRENGTH); for calibration studies")

    def given_options(self, args) -> list[str]:
        return [flag for flag, given in (("--fast", getattr(args, "fast", False)),
                                         ("--probes", getattr(args, "probes", None) is not None),
                                         ("--cue-strength", getattr(args, "cue_strength", None) is not None))
                if given]

    def run(self, args, argv) -> int:
        return run_study(args, argv)


register_study(ProbesStudy())
