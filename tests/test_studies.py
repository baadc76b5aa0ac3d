"""Studies are registered objects: ``benchmarks.run`` looks ``--study NAME`` up in ``benchmarks.studies.STUDIES``."""
from __future__ import annotations

import pytest

import benchmarks.run as bench
from benchmarks import studies


class DropoutStudy(studies.Study):
    name = "dropout_toy"
    model = "text"

    def varies(self, key):
        return key == "dropout"

    def variants(self, common, depth_fn):
        return [studies.Variant(f"text[dropout={p}]", "text", {**common, "dropout": p}) for p in (0.0, 0.3)]

    def render(self, results):
        return ["", "## dropout toy"]


@pytest.fixture
def toy_study():
    study = studies.register_study(DropoutStudy())
    yield study
    del studies.STUDIES[study.name]


def test_a_registered_study_is_offered_planned_and_rendered(toy_study):
    args = bench.build_parser().parse_args(["--study", "dropout_toy"])
    variants = bench.plan_variants(args, lambda: 4)
    assert [(v.label, v.model, v.kwargs) for v in variants] == [
        ("text[dropout=0.0]", "text", {"dropout": 0.0}), ("text[dropout=0.3]", "text", {"dropout": 0.3})]
    with pytest.raises(bench.UsageError, match="runs text only"):
        bench.plan_variants(bench.build_parser().parse_args(["--study", "dropout_toy", "--models", "mhmf"]),
                            lambda: 4)
    assert studies.render({"config": {"study": "dropout_toy"}}) == ["", "## dropout toy"]
    with pytest.raises(ValueError, match="already registered"):
        studies.register_study(DropoutStudy())


def test_the_papers_studies_are_registered_with_what_they_vary():
    assert {"finetune", "layers", "restitution"} <= set(studies.STUDIES)
    assert studies.STUDIES["finetune"].varies("encoder_mode")
    assert studies.STUDIES["layers"].varies("audio_layers") and not studies.STUDIES["layers"].varies("dropout")
    assert studies.STUDIES["restitution"].varies("restitution")


def test_the_restitution_studys_log_jsonl_is_checked_against_its_schema(tmp_path):
    import json

    from fusionkit.training.atomic import CheckpointError

    good = {"epoch": 1, "step": 3, "samples_seen": 12, "train_loss": 0.5, "train_task_loss": 0.5, "valid_loss": 0.4,
            "valid": {"mae": 0.4}, "seconds": 1.0, "improved": True, "train_diagnostics": {"gate": 0.2}}
    (tmp_path / "log.jsonl").write_text(json.dumps(good) + "\n")
    assert studies.last_train_diagnostics(tmp_path) == {"gate": 0.2}
    for bad in ({**good, "epoch": "one"}, {**good, "train_diagnostics": ["x"]}, [1]):
        (tmp_path / "log.jsonl").write_text(json.dumps(bad) + "\n")
        with pytest.raises(CheckpointError, match="log.jsonl"):
            studies.last_train_diagnostics(tmp_path)
    (tmp_path / "log.jsonl").write_text("{not json\n")
    with pytest.raises(CheckpointError, match="line 1"):
        studies.last_train_diagnostics(tmp_path)
