"""The paper's studies with ``mhmf`` (``python -m benchmarks.run --study …``): what each one measures beyond the
plain results table, and how it is printed beside the paper's numbers.

* ``finetune`` (§4.2): BERT random / frozen / fine-tuned inside ``mhmf``; the paper's Acc2 printed beside ours.
* ``layers`` (Table 3): the paper's five layer choices scaled to the encoder's depth; the paper's Acc2 beside ours.
A study is a :class:`Study` object registered in :data:`STUDIES` with :func:`register_study`: its model, the
options it varies, its variants (table rows), what it keeps of each run, its analysis and its rendering.
``benchmarks.run`` has no study names in it: ``--study NAME`` looks the object up here. A new study (tuning,
probes, …) subclasses :class:`Study` in its own module, registers an instance with
``register_study(MyStudy())``, and that module is imported at the end of this one.

* ``restitution`` (§4.3, Fig. 4): with vs without restitution; the restitution diagnostics (train split, last
  epoch; test split), the expected triplet margins of ``F``, ``F+``, ``F−`` on the test split, silhouettes of the
  polarity classes on the fused features ``F`` (the gated fusion's output, not its concatenation with BERT's last
  layer) in feature space and in the t-SNE plane, and ``tsne.png``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks import paper_tables as paper

ENCODER_MODES = ("finetune", "frozen", "random")
FUSED_FILE = "test_fused.npy"
LABELS_FILE = "test_labels.npy"
MARGIN_VIEWS = ("F", "F+", "F-")


@dataclass
class Variant:
    """One row of the table: a model with fixed extra build arguments."""

    label: str
    model: str
    kwargs: dict = field(default_factory=dict)

    @property
    def dirname(self) -> str:
        return re.sub(r"[^A-Za-z0-9._=-]+", "_", self.label).strip("_")




def scale_layers(layers, depth: int, reference: int = 12) -> tuple[int, ...]:
    try:
        from recipes.mhmf_bert import scale_layers as recipe_scale

        return tuple(recipe_scale(layers, depth, reference))
    except ImportError:  # same rule as the recipe: round half up, at least 1
        return tuple(max(1, (2 * l * depth + reference) // (2 * reference)) for l in layers)


def table3_variants(depth: int, common: dict) -> tuple[list[Variant], list[dict]]:
    """The paper's Table 3 rows scaled to an encoder of ``depth`` layers (:func:`scale_layers`).

    Returns the variants to train (one per distinct layer choice) and one record per paper row: its printed
    and scaled layers, the variant label that measures it, and notes where scaling changed its meaning (two
    stages on one layer; the same layers as an earlier row, which is then measured once and reported for both).
    """
    variants, rows, label_of = [], [], {}
    for row in paper.TABLE3:
        a = scale_layers(row["audio"], depth, paper.TABLE3_DEPTH)
        v = scale_layers(row["vision"], depth, paper.TABLE3_DEPTH)
        notes = []
        for modality, given, scaled in (("audio", row["audio"], a), ("vision", row["vision"], v)):
            if len(set(scaled)) < len(set(given)):
                notes.append(f"{modality} {{{','.join(map(str, given))}}} collapses to layer {scaled[0]} at depth "
                             f"{depth}: both stages read the same layer")
        if (a, v) in label_of:
            first = label_of[(a, v)]
            notes.append(f"same layers as experiment {first[1]} at depth {depth}: measured once, by {first[0]}")
            label = first[0]
        else:
            label = f"mhmf[T3.{row['experiment']} audio={','.join(map(str, a))} vision={','.join(map(str, v))}]"
            label_of[(a, v)] = (label, row["experiment"])
            variants.append(Variant(label, "mhmf", {**common, "audio_layers": a, "vision_layers": v}))
        rows.append({"experiment": row["experiment"], "paper_audio": row["printed"][0],
                     "paper_vision": row["printed"][1], "audio": list(a), "vision": list(v), "label": label,
                     "paper_acc2": row["acc2"], "notes": notes})
    return variants, rows


# -- studies as objects -----------------------------------------------------------------------------------------
class Study:
    """One ``--study``: override what differs from these defaults.

    name: the ``--study`` value. model: the registered model it runs. varies(key): whether the study sets model
    option ``key`` itself (a flag setting it too is refused). variants(common, depth_fn): the table rows, each
    built with ``common`` (the command line's options) plus its own; ``depth_fn()`` gives the text encoder's
    depth. after_run(result, run_dir): keep what the analysis needs of one run (rank 0). analyse(run_dirs,
    depth_fn): ``results.json``'s ``study_results`` (``None``: none). finish(run_dirs, out, seed): extra files
    (plots) once ``results.json`` is written. render(results): Markdown lines after the main table.
    figure: it draws a figure (matplotlib is required before any run). add_arguments(parser): command-line
    options of this study only; given_options(args): those the command line set (refused without the study).
    run(args, argv): a study with its own runner returns the exit status (``None``: the plain table's runs).
    """

    name: str = ""
    model: str = "mhmf"
    figure: bool = False

    def add_arguments(self, parser) -> None:
        return None

    def given_options(self, args) -> list[str]:
        return []

    def run(self, args, argv) -> int | None:
        return None

    def varies(self, key: str) -> bool:
        return False

    def variants(self, common: dict, depth_fn: Callable[[], int]) -> list[Variant]:
        raise NotImplementedError

    def after_run(self, result, run_dir: Path) -> None:
        return None

    def analyse(self, run_dirs: dict, depth_fn: Callable[[], int]) -> dict | None:
        return None

    def finish(self, run_dirs: dict, out: Path, seed: int) -> None:
        return None

    def render(self, results: dict) -> list[str]:
        return []


STUDIES: dict[str, Study] = {}


def register_study(study: Study) -> Study:
    """Add ``study`` to :data:`STUDIES` under ``study.name`` (a taken name is an error)."""
    if not study.name or study.name in STUDIES:
        raise ValueError(f"study name {study.name!r} is empty or already registered ({', '.join(STUDIES)})")
    STUDIES[study.name] = study
    return study


def _mean_std(values) -> tuple[float, float | None]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


def _pm(values, scale: float = 1.0, digits: int = 3) -> str:
    mean, std = _mean_std(values)
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def _acc2(results: dict, label: str) -> tuple[list[float], list[float]]:
    runs = [r for r in results["runs"] if r["model"] == label]
    return [r["test"]["acc2_has0"] for r in runs], [r["test"]["acc2_non0"] for r in runs]


# -- analysis after the runs --------------------------------------------------------------------------------
def polarity(labels: np.ndarray) -> np.ndarray:
    """The restitution loss's classes: 1 for ``label ≥ 0``, 0 for ``label < 0``."""
    return (np.asarray(labels) >= 0).astype(np.int64)


def tsne_embedding(features: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = float(min(30.0, max(2.0, (len(features) - 1) / 3)))
    # one thread: sklearn's OpenMP pool busy-waits against torch's and gets ~100x slower on few cores
    with threadpool_limits(1):
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def silhouettes(features: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """Silhouette of the polarity classes on ``features`` (cosine, the restitution loss's geometry) and on its
    2-D t-SNE embedding (Euclidean, what the figure shows); ``None`` when only one class is present."""
    from sklearn.metrics import silhouette_score

    classes = polarity(labels)
    if len(set(classes.tolist())) < 2:
        return {"feature_space": None, "tsne": None}
    return {"feature_space": float(silhouette_score(features, classes, metric="cosine")),
            "tsne": float(silhouette_score(tsne_embedding(features, seed), classes))}


def last_train_diagnostics(run_dir: Path) -> dict:
    """The last epoch's train diagnostics of ``log.jsonl``, every line checked against its schema first."""
    from fusionkit.schemas import HISTORY_ENTRY, read_jsonl

    entries = read_jsonl(run_dir / "log.jsonl", HISTORY_ENTRY)
    return entries[-1].get("train_diagnostics", {}) if entries else {}


def analyse_restitution(run_dirs: dict[str, dict[int, Path]]) -> dict:
    """Per variant and seed: last-epoch train diagnostics, test diagnostics and silhouettes of ``F``."""
    from fusionkit.schemas import check_result
    from fusionkit.training.atomic import read_json

    out: dict = {}
    for label, by_seed in run_dirs.items():
        out[label] = {}
        for seed, run_dir in by_seed.items():
            result = check_result(read_json(run_dir / "result.json"), run_dir / "result.json")
            entry = {"train": last_train_diagnostics(run_dir), "test": result.get("test_diagnostics", {})}
            if (run_dir / FUSED_FILE).is_file():
                entry["silhouette"] = silhouettes(np.load(run_dir / FUSED_FILE), np.load(run_dir / LABELS_FILE), seed)
            out[label][str(seed)] = entry
    return out


def plot_tsne(run_dirs: dict[str, Path], path: Path, seed: int) -> None:
    """Side-by-side t-SNE of the fused test features ``F`` (one panel per variant), coloured by label."""
    from fusionkit.optional import require

    matplotlib = require("matplotlib", "the t-SNE figure of --study restitution")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(run_dirs), figsize=(5 * len(run_dirs), 4.4), squeeze=False)
    points = None
    for ax, (label, run_dir) in zip(axes[0], run_dirs.items()):
        feats = np.load(run_dir / FUSED_FILE, allow_pickle=False)
        labels = np.load(run_dir / LABELS_FILE, allow_pickle=False)
        emb = tsne_embedding(feats, seed)
        points = ax.scatter(emb[:, 0], emb[:, 1], c=labels, cmap="coolwarm", vmin=-3, vmax=3, s=10)
        ax.set_title(f"{label}: fused F (test, seed {seed})")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(points, ax=axes[0].tolist(), label="sentiment label")
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- rendering ------------------------------------------------------------------------------------------------
def render(results: dict) -> list[str]:
    """Markdown lines of the study's own tables (empty when ``results`` is not a study)."""
    study = STUDIES.get(results["config"].get("study"))
    return study.render(results) if study is not None else []


def _render_finetune(results: dict) -> list[str]:
    lines = ["", f"## Beside the paper — {paper.FINETUNE_TITLE}", "",
             "| BERT in mhmf | paper Acc2 | ours Acc2 has0 | ours Acc2 non0 |", "|---|---|---|---|"]
    for label, v in results["config"]["variants"].items():
        mode = v["kwargs"].get("encoder_mode", "finetune")
        has0, non0 = _acc2(results, label)
        lines.append(f"| {mode} (`{label}`) | {paper.FINETUNE_ACC2[mode]:.1f} | {_pm(has0, 100, 1)} | "
                     f"{_pm(non0, 100, 1)} |")
    lines += ["", "Paper: BERT-base on real CMU-MOSI features. " + paper.ACC2_NOTE]
    return lines


def _render_layers(results: dict) -> list[str]:
    rows = results.get("study_results", {}).get("table3", [])
    depth = results.get("study_results", {}).get("depth")
    lines = ["", f"## Beside the paper — {paper.TABLE3_TITLE}", "",
             f"Layers are the paper's (12-layer BERT-base) scaled to this encoder's depth ({depth}) by "
             "`round_half_up(l · depth / 12)`; `{12}` means both CA stages read the last layer.", "",
             "| exp. | paper audio | paper vision | audio here | vision here | paper Acc2 | ours Acc2 has0 | "
             "ours Acc2 non0 | note |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        has0, non0 = _acc2(results, row["label"])
        lines.append(f"| {row['experiment']} | {row['paper_audio']} | {row['paper_vision']} | "
                     f"{','.join(map(str, row['audio']))} | {','.join(map(str, row['vision']))} | "
                     f"{row['paper_acc2']:.1f} | {_pm(has0, 100, 1)} | {_pm(non0, 100, 1)} | "
                     f"{'; '.join(row['notes']) or '–'} |")
    lines += ["", "Paper: BERT-base on real CMU-MOSI features. " + paper.ACC2_NOTE]
    return lines


def _render_restitution(results: dict) -> list[str]:
    analysis = results.get("study_results", {}).get("restitution", {})
    if not analysis:
        return []
    lines = ["", "## Restitution diagnostics", "",
             "Train split: means over the last epoch's batches; test split: the selected weights. `loss`: the "
             f"unweighted restitution loss (eq. 17) — with the gate at 0.5 it cannot go below 4·ln2 = "
             f"{4 * np.log(2):.3f}; `|a−0.5|`: the gate's mean distance from 0.5; margins: the expected triplet "
             "margin E[d(F_a,F_n) − d(F_a,F_p)] of F = G̃, F+ = G̃ + R+ and F− = G̃ + R− (higher = classes "
             "better separated). Mean ± std over seeds and over the 2 branches × 2 stages.", "",
             "| variant | train loss | train \\|a−0.5\\| | train margin F | F+ | F− | test \\|a−0.5\\| | test margin F | "
             "F+ | F− | silhouette F (cosine) | silhouette F (t-SNE) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, by_seed in analysis.items():
        def collect(split: str, suffix: str) -> list[float]:
            return [v for entry in by_seed.values() for k, v in entry[split].items() if k.endswith("/" + suffix)]

        def sil(kind: str) -> list[float]:
            return [e["silhouette"][kind] for e in by_seed.values()
                    if e.get("silhouette") and e["silhouette"][kind] is not None]

        cells = [collect("train", "loss"), collect("train", "gate_dev")]
        cells += [collect("train", f"margin_{v}") for v in MARGIN_VIEWS]
        cells += [collect("test", "gate_dev")] + [collect("test", f"margin_{v}") for v in MARGIN_VIEWS]
        cells += [sil("feature_space"), sil("tsne")]
        lines.append("| " + " | ".join([f"`{label}`"] + [_pm(c) if c else "–" for c in cells]) + " |")
    lines += ["", "`tsne.png`: t-SNE of the fused test features F of the first seed, per variant."]
    return lines


# -- the paper's studies ----------------------------------------------------------------------------------------
class FinetuneStudy(Study):
    """§4.2: BERT random / frozen / fine-tuned inside mhmf."""

    name = "finetune"

    def varies(self, key):
        return key == "encoder_mode"

    def variants(self, common, depth_fn):
        return [Variant(f"mhmf[{mode}]", "mhmf", {**common, "encoder_mode": mode}) for mode in ENCODER_MODES]

    def render(self, results):
        return _render_finetune(results)


class LayersStudy(Study):
    """Table 3: the paper's layer choices scaled to the encoder's depth."""

    name = "layers"

    def varies(self, key):
        return key.endswith("_layers")

    def variants(self, common, depth_fn):
        return table3_variants(depth_fn(), common)[0]

    def analyse(self, run_dirs, depth_fn):
        depth = depth_fn()
        return {"depth": depth, "table3": table3_variants(depth, {})[1]}

    def render(self, results):
        return _render_layers(results)


class RestitutionStudy(Study):
    """§4.3, Fig. 4: with vs without restitution, diagnostics, margins, silhouettes and t-SNE."""

    name = "restitution"
    figure = True  # tsne.png

    def varies(self, key):
        return key == "restitution"

    def variants(self, common, depth_fn):
        return [Variant("mhmf", "mhmf", {**common, "restitution": True}),
                Variant("mhmf[no restitution]", "mhmf", {**common, "restitution": False})]

    def after_run(self, result, run_dir):
        if result.test_fused is not None:
            from fusionkit.diskfull import writing

            with writing(run_dir / FUSED_FILE):
                np.save(run_dir / FUSED_FILE, result.test_fused.astype(np.float32), allow_pickle=False)
                np.save(run_dir / LABELS_FILE, result.test_labels.astype(np.float32), allow_pickle=False)

    def analyse(self, run_dirs, depth_fn):
        return {"restitution": analyse_restitution(run_dirs)}

    def finish(self, run_dirs, out, seed):
        plot_tsne({label: by_seed[seed] for label, by_seed in run_dirs.items()}, out / "tsne.png", seed)

    def render(self, results):
        return _render_restitution(results)


for _study in (FinetuneStudy(), LayersStudy(), RestitutionStudy()):
    register_study(_study)

# studies in their own modules register themselves on import
from benchmarks import probes  # noqa: E402,F401 - --study probes
