"""Scoring new clips with a model trained on extracted features, extracted exactly as its training data was.

The run directory's ``run.json`` names the feature tables the model was trained on (``--features``); the
``provenance.json`` beside each table gives the extraction settings (openSMILE feature set and level, sample rate,
OpenFace columns). New clips are extracted with those settings, and a mismatch — another feature set, another
dimension, a visual model without OpenFace input — is refused before any audio is read.
"""
from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fusionkit.extract.provenance import PROVENANCE, config_from, read_provenance
from fusionkit.extract.runner import ExtractError


@dataclass
class TrainedOn:
    """What a run's model was trained on: ``{modality: (provenance, level)}`` with level ``words``/``segments``."""

    run_json: Path
    modalities: dict


def _run_json(run_dir: Path) -> Path:
    for candidate in (run_dir, run_dir.parent):
        if (candidate / "run.json").is_file():
            return candidate / "run.json"
    raise ExtractError(f"no run.json in {str(run_dir)!r} or its parent; pass a run directory written by "
                       f"python -m benchmarks.run, e.g. RUN/tfn/seed0")


def trained_on(run_dir, *, provenance=None) -> TrainedOn:
    """Read the run's feature tables and their provenance (``provenance``: a provenance.json or its folder, used
    when the tables have moved since training)."""
    path = _run_json(Path(run_dir))
    spec = json.loads(path.read_text(encoding="utf-8"))
    items = spec.get("features") or []
    if not items:
        raise ExtractError(f"{path} records no --features: this model was not trained on extracted features; score "
                           f"text with python -m fusionkit.predict CHECKPOINT --text '…'")
    out = {}
    for item in items:
        modality, _, table = str(item).partition("=")
        table_path = Path(table)
        prov_path = Path(provenance) if provenance is not None else table_path.parent / PROVENANCE
        if prov_path.is_dir():
            prov_path = prov_path / PROVENANCE
        if not prov_path.is_file():
            raise ExtractError(f"the run was trained on {modality} features from {table!r}, but {str(prov_path)!r} "
                               f"does not exist; run from the directory you trained in, or pass --provenance "
                               f"OUT/provenance.json of that extraction")
        try:
            prov = read_provenance(prov_path)
        except ValueError as exc:
            raise ExtractError(str(exc)) from None
        if modality not in prov["modalities"]:
            raise ExtractError(f"{str(prov_path)!r} describes {', '.join(prov['modalities'])} features, not the "
                               f"{modality} table {table!r} the run was trained on")
        level = "segments" if table_path.stem.endswith("_segments") else "words"
        out[modality] = (prov, level)
    return TrainedOn(run_json=path, modalities=out)


def check_request(trained: TrainedOn, predictor, *, feature_set: str | None, openface) -> None:
    """Refuse a mismatch between the trained model and this request before any work."""
    dims = {"acoustic": predictor.d_acoustic, "visual": predictor.d_visual}
    for modality, (prov, _) in trained.modalities.items():
        recorded = prov["modalities"][modality]["dim"]
        if dims[modality] and recorded != dims[modality]:
            raise ExtractError(f"the model takes {dims[modality]}-d {modality} features but its provenance records "
                               f"{recorded}-d ({prov['modalities'][modality]['source']}); pass --provenance of the "
                               f"extraction the model was trained on")
    acoustic = trained.modalities.get("acoustic")
    if feature_set is not None and acoustic is not None and feature_set != acoustic[0]["config"]["feature_set"]:
        raise ExtractError(f"the model was trained on openSMILE {acoustic[0]['config']['feature_set']} features; "
                           f"--feature-set {feature_set} would give other features (drop --feature-set: prediction "
                           f"uses the training settings)")
    if dims["visual"] and openface is None:
        raise ExtractError(f"the model was trained with {dims['visual']}-d OpenFace features; pass --openface with "
                           f"the clip's OpenFace FeatureExtraction CSV")
    if not dims["visual"] and openface is not None:
        raise ExtractError("the model was trained without visual features; drop --openface")
    if dims["acoustic"] and acoustic is None:
        raise ExtractError("the model takes acoustic features that were not extracted by python -m fusionkit "
                           "extract; score it with python -m fusionkit.predict")


def predict_clips(run_dir, *, audio, words, openface=None, feature_set: str | None = None, provenance=None,
                  device: str = "cpu") -> tuple[list, dict]:
    """``([(segment_id, score, words)], {segment_id: error})`` for the clips in ``audio``."""
    from fusionkit.extract.api import extract
    from fusionkit.inference import load

    trained = trained_on(run_dir, provenance=provenance)
    predictor = load(run_dir, device=device)
    check_request(trained, predictor, feature_set=feature_set, openface=openface)
    ref = trained.modalities.get("acoustic", trained.modalities.get("visual"))[0]
    config = config_from(ref)
    visual_prov = trained.modalities.get("visual")
    names = tuple(visual_prov[0]["modalities"]["visual"]["names"]) if visual_prov else ()
    config = replace(config, openface_names=names)
    with tempfile.TemporaryDirectory(prefix="fusionkit-predict-") as tmp:
        try:
            result = extract(audio=audio, words=words, out=tmp, openface=openface if predictor.d_visual else None,
                             feature_set=config.feature_set, feature_level=config.feature_level,
                             sample_rate=config.sample_rate, openface_groups=config.openface_groups,
                             openface_names=config.openface_names, workers=1, resume=False, progress=False)
        except ExtractError as exc:
            if len(exc.failed) == 1:  # one clip: its own message, not a pointer into a temporary directory
                raise ExtractError(next(iter(exc.failed.values()))) from None
            if exc.failed:
                raise ExtractError(f"no clip could be scored: " + "; ".join(list(exc.failed.values())[:3])) from None
            raise
        tables = {m: _rows(result.tables[m]) for m in result.tables if m in ("acoustic", "visual")}
    for modality, (prov, _) in trained.modalities.items():
        if modality not in tables:
            continue
        got, want = tables[modality]["names"], prov["modalities"][modality]["names"]
        if got != want:
            raise ExtractError(f"the new clips' {modality} features ({len(got)}: {got[:2]} …) differ from the "
                               f"training features ({len(want)}: {want[:2]} …); install the openSMILE version "
                               f"recorded in the provenance ({prov['versions'].get('opensmile_package')})")
    dims = {"acoustic": predictor.d_acoustic, "visual": predictor.d_visual}
    segments, acoustic, visual = [], [], []
    for seg in result.segments:
        ws = tables["acoustic" if "acoustic" in tables else "visual"]["words"][seg]
        segments.append((seg, ws))
        for modality, bucket in (("acoustic", acoustic), ("visual", visual)):
            if modality in trained.modalities and dims[modality]:
                level = trained.modalities[modality][1]
                rows = tables[modality]["rows"][seg] if level == "words" else \
                    np.tile(tables[modality]["clip"][seg][None, :], (len(ws), 1))
                bucket.append(rows)
    if not segments:
        return [], result.failed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a modality the model does not use is absent on purpose
        scores = predictor.predict([ws for _, ws in segments], acoustic=acoustic or None, visual=visual or None,
                                   batch=True)
    return [(seg, float(s), ws) for (seg, ws), s in zip(segments, scores)], result.failed


def _rows(paths: dict) -> dict:
    with np.load(paths["words"], allow_pickle=False) as z:
        ids, feats = z["segment_id"].tolist(), z["features"]
        words, names = z["word"].tolist(), [str(n) for n in z["names"].tolist()]
    rows, by_words = {}, {}
    for k, seg in enumerate(ids):
        rows.setdefault(seg, []).append(feats[k])
        by_words.setdefault(seg, []).append(words[k])
    with np.load(paths["segments"], allow_pickle=False) as z:
        clip = {s: z["features"][k] for k, s in enumerate(z["segment_id"].tolist())}
    return {"rows": {s: np.stack(r) for s, r in rows.items()}, "words": by_words, "clip": clip, "names": names}
