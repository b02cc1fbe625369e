"""docs/params.md is generated from the dataclasses that parse params.yaml, and says what they say."""
from __future__ import annotations

from benchmark import paths
from benchmark.pipeline import reference, spec


def test_docs_params_is_the_generated_reference():
    text = (paths.REPO_ROOT / "docs" / "params.md").read_text()
    assert text == reference.params_reference(), "run: python -m benchmark.pipeline.reference > docs/params.md"


def test_every_field_is_documented_with_its_comment():
    text = reference.params_reference()
    assert "| `early_stopping_metric` | str | `'loss'` | per-step metric (an on_step key) that ASHA minimises |" in text
    for cls in (spec.TrackingSettings, spec.RaySettings, spec.SweepSettings, spec.TuneSettings):
        comments = reference.field_comments(cls)
        assert set(comments) == {f.name for f in spec.dataclasses.fields(cls)}, cls.__name__


def test_sweep_keys_come_from_the_dataclass():
    assert spec.SWEEP_KEYS == ("title", "base", "grid", "method_options", "cases", "max_trials", "tune")


def test_questions_name_sweeps_of_the_params():
    import pytest

    from benchmark.experiments.config import ConfigError

    params = {"sweeps": {"a": {"grid": {"seed": [0]}}}, "questions": {"non_gaussian": ["a"]}}
    assert spec.parse_questions(params).non_gaussian == ("a",)
    assert spec.parse_questions({"sweeps": {}}) == spec.QuestionSweeps()
    with pytest.raises(ConfigError, match=r"questions\.dead_codes: 'b' is not a sweep"):
        spec.parse_questions({**params, "questions": {"dead_codes": ["b"]}})
    with pytest.raises(ConfigError, match=r"questions\.typo: unknown key"):
        spec.parse_questions({**params, "questions": {"typo": ["a"]}})


def test_the_profiles_declare_their_questions():
    for name in ("params.yaml", "params-paper.yaml"):
        spec.parse_questions(spec.load_params(paths.REPO_ROOT / name))
