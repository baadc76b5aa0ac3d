"""``benchmarks.run --from-tuning DIR``: re-run the settings :mod:`benchmarks.tune` chose, on fresh seeds.

Each ``DIR/<model>/best.json`` becomes ``--set MODEL.KEY=VALUE`` entries (its training settings and model
options) plus the tuning budget (epoch cap and patience), so the final runs train exactly as the best trial did,
on seeds ``0..N-1`` that tuning never used (refused otherwise), and are tested once. ``results.json`` records,
for every row, which split chose its settings and its epoch (``selection``) and the tuning it came from
(``tuning``).
"""
from __future__ import annotations

import json
from pathlib import Path

from fusionkit.cli import UsageError


def add_arguments(p) -> None:
    p.add_argument("--from-tuning", default=None, metavar="DIR",
                   help="run the best settings of python -m benchmarks.tune --out DIR (its DIR/<model>/best.json) "
                        "on seeds tuning never used; --models picks a subset")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes over the models × seeds grid (default: 1); see docs/tuning.md")


def read_best(directory: Path) -> dict[str, dict]:
    """``{model: best.json}`` of a tuning output directory, in the order of its ``summary.json``."""
    if not directory.is_dir():
        raise UsageError(f"--from-tuning {str(directory)!r} is not a directory; pass the --out of "
                         f"python -m benchmarks.tune")
    found = {p.parent.name: json.loads(p.read_text()) for p in sorted(directory.glob("*/best.json"))}
    if not found:
        raise UsageError(f"--from-tuning {str(directory)!r} holds no <model>/best.json; run python -m benchmarks.tune "
                         f"--out {directory} first (it writes them when every model has its trials)")
    summary = directory / "summary.json"
    if summary.is_file():
        order = list(json.loads(summary.read_text()).get("models", {}))
        found = {m: found[m] for m in order if m in found} | found
    return found


def apply(args) -> None:
    """With ``--from-tuning``: fill ``args.models`` and ``args.sets`` from the tuning; refuse a dataset, text
    model or seed range that does not fit it. Called once, before the runs are planned."""
    if args.from_tuning is None:
        args.tuning = None
        return
    directory = Path(args.from_tuning)
    best = read_best(directory)
    wanted = list(best) if args.models in (None, "all") else [m.strip() for m in args.models.split(",") if m.strip()]
    missing = [m for m in wanted if m not in best]
    if missing:
        raise UsageError(f"--from-tuning {directory}: no best.json for {', '.join(missing)} (tuned: "
                         f"{', '.join(best)})")
    if args.study is not None:
        raise UsageError("--from-tuning and --study are exclusive")
    for flag, value in (("--epochs", args.epochs), ("--lr", args.lr), ("--encoder-lr", args.encoder_lr),
                        ("--batch-size", args.batch_size)):
        if value is not None:
            raise UsageError(f"{flag} would override the tuned settings; drop it (--from-tuning uses the tuning's "
                             f"settings and epoch budget)")
    datasets = {best[m]["dataset"] for m in wanted}
    if datasets != {args.dataset}:
        raise UsageError(f"--from-tuning {directory} was tuned on {', '.join(sorted(datasets))}; pass --dataset "
                         f"{sorted(datasets)[0]}")
    text_model = "tiny random BERT (tests)" if args.tiny_bert else (args.text_model or "bundled MiniLM-L6")
    tuned_text = {best[m]["budget"]["text_model"] for m in wanted}
    if tuned_text != {text_model}:
        raise UsageError(f"--from-tuning {directory} was tuned with text model {', '.join(sorted(tuned_text))}, this "
                         f"run uses {text_model}; use the same text model")
    tuning_seeds = sorted({s for m in wanted for s in best[m].get("tuning_seeds", [])})
    seeds = list(range(args.seeds))
    overlap = sorted(set(seeds) & set(tuning_seeds))
    if overlap:
        raise UsageError(f"--seeds {args.seeds} (seeds 0..{args.seeds - 1}) includes seed(s) {overlap} that tuning "
                         f"trained with; choose fewer seeds or tune with another --seed")
    sets = []
    for model in wanted:
        entry = best[model]
        values = {**(entry.get("train") or {}), **(entry.get("options") or {}),
                  "epochs": entry["budget"]["epochs"], "patience": entry["budget"]["patience"]}
        sets += [f"{model}.{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items()]
    user_keys = {s.partition("=")[0].strip() for s in args.sets}
    clash = sorted(user_keys & {s.partition("=")[0] for s in sets})
    if clash:
        raise UsageError(f"--set {', '.join(clash)} would override a tuned setting; drop it")
    args.models = ",".join(wanted)
    args.sets = sets + list(args.sets)
    args.tuning = {"dir": str(directory.resolve()), "tuning_seeds": tuning_seeds, "seeds": seeds,
                   "seeds_disjoint_from_tuning": True,
                   "models": {m: {k: best[m].get(k) for k in ("study", "storage", "best_trial", "best_value",
                                                               "train", "options", "budget", "trials",
                                                               "search_space")} for m in wanted}}


def record_provenance(results: dict, args) -> None:
    """``results["selection"]``: which split chose every row's settings and every run's epoch; and
    ``results["tuning"]`` with ``--from-tuning``."""
    tuning = getattr(args, "tuning", None)
    settings = {}
    for label, variant in results["config"]["variants"].items():
        model = variant["model"]
        if tuning is not None and model in tuning["models"]:
            t = tuning["models"][model]
            settings[label] = {"chosen_by": f"tuning study {t['study']} (best of {t['budget']['trials']} trials by "
                                            f"validation {t['budget']['select_metric']})", "split": "valid",
                               "trial": t["best_trial"]}
        else:
            settings[label] = {"chosen_by": "train_defaults and the command line (no selection)", "split": None}
    results["selection"] = {"epoch": {"split": "valid", "rule": "each run keeps the epoch with the best validation "
                                                                "MAE; early stopping counts validation epochs only"},
                            "settings": settings, "test": "evaluated once per run, with the selected weights"}
    if tuning is not None:
        results["tuning"] = tuning


def render(results: dict) -> list[str]:
    """``results.md`` lines on the tuning behind the table (nothing without ``--from-tuning``)."""
    tuning = results.get("tuning")
    if not tuning:
        return []
    budgets = {json.dumps({k: v for k, v in t["budget"].items() if k != "text_model"}, sort_keys=True)
               for t in tuning["models"].values()}
    any_budget = next(iter(tuning["models"].values()))["budget"]
    lines = ["", "## Tuning", "",
             f"Settings chosen by `python -m benchmarks.tune` ({tuning['dir']}) on the validation split only: "
             f"{any_budget['trials']} finished trials per model, at most {any_budget['epochs']} epochs with patience "
             f"{any_budget['patience']}, training seed {any_budget['seed']}, {any_budget['sampler']} sampler, "
             f"{any_budget['pruner'] or 'no'} pruning" + ("" if len(budgets) == 1 else
                                                         " (budgets differ between models: see results.json)")
             + f". The table's seeds ({', '.join(map(str, tuning['seeds']))}) were never used in tuning "
               f"(tuning seed{'s' if len(tuning['tuning_seeds']) > 1 else ''} "
               f"{', '.join(map(str, tuning['tuning_seeds']))}).", ""]
    for model, t in tuning["models"].items():
        settings = ", ".join(f"{k}={v}" for k, v in {**(t["train"] or {}), **(t["options"] or {})}.items())
        lines.append(f"- `{model}`: trial {t['best_trial']} (validation MAE {t['best_value']:.4f}; "
                     f"{t['trials']['complete']} complete, {t['trials']['pruned']} pruned): {settings or 'defaults'}")
    return lines + [""]
