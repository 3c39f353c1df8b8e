"""TableSpec, Profile, Expected and Source: validation and serialization."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from reproduce.spec import Expected, Profile, ReproduceError, RunContext, Source, format_eps
from reproduce.table_ids import ID_PATTERN


@pytest.mark.parametrize("table_id", ["linfdist-cifar8", "gloro-mnist158", "linfdist-mnist03",
                                      "lirpa-tinyimagenet1", "linfdist-cifar8-v1mlp", "lipnorm-digits0-fake"])
def test_id_grammar_accepts(table_id):
    assert ID_PATTERN.match(table_id)


@pytest.mark.parametrize("table_id", ["linfdist-cifar", "linfdist_cifar8", "LinfDist-cifar8", "foo-cifar8",
                                      "linfdist-svhn8", "linfdist-cifar8-", "linfdist-cifar8-V1",
                                      "linfdist-8"])
def test_id_grammar_rejects(table_id, make_spec):
    assert not ID_PATTERN.match(table_id)
    with pytest.raises(ReproduceError, match="id must follow"):
        make_spec(table_id)


def test_fake_spec_is_valid_and_normalized(make_spec):
    spec = make_spec()
    assert list(spec.profiles) == ["smoke", "quick", "full"]
    assert spec.profile("smoke").synthetic_data
    assert spec.eps_label() == "8/255 (ℓ∞)"


def test_id_prefix_must_match_package(make_spec):
    with pytest.raises(ReproduceError, match="start with 'lipnorm'-"):
        make_spec("linfdist-digits0")
    with pytest.raises(ReproduceError, match="package must be one of"):
        make_spec(package="gloro")
    make_spec("gloro-mnist158", package="gloro_torch", norm="l2")


def test_every_profile_must_be_present(make_spec):
    spec = make_spec()
    profiles = dict(spec.profiles)
    del profiles["quick"]
    with pytest.raises(ReproduceError, match="profiles quick are missing"):
        make_spec(profiles=profiles)
    profiles["quick"] = dataclasses.replace(spec.profiles["full"])  # named "full" under key "quick"
    with pytest.raises(ReproduceError, match="must be a Profile named 'quick'"):
        make_spec(profiles=profiles)


def test_unknown_profile_lookup_lists_profiles(make_spec):
    with pytest.raises(ReproduceError, match="choose one of smoke, quick, full"):
        make_spec().profile("medium")


@pytest.mark.parametrize("field,value,match", [
    ("eps_test", -0.1, "eps_test must be >= 0"),
    ("eps_train", float("nan"), "eps_train must be a finite number"),
    ("experiment", "linfdist.experiment.run", "must be 'module:function'"),
    ("model", {"depth": 6}, "model config dataclass"),
    ("norm", "l1", "norm must be one of"),
    ("paper", {"clean": float("inf")}, "finite number"),
    ("paper", {"Clean Acc": 1.0}, "paper metric name"),
])
def test_table_spec_rejects(field, value, match, make_spec):
    with pytest.raises(ReproduceError, match=match):
        make_spec(**{field: value})


def test_expected_validation_and_admits():
    with pytest.raises(ReproduceError, match="tolerance must be >= 0"):
        Expected(50.0, -1.0)
    with pytest.raises(ReproduceError, match="finite"):
        Expected(float("nan"), 1.0)
    exp = Expected(50.0, 0.5)
    assert exp.admits(50.5) and exp.admits(49.5) and exp.admits(50.0)
    assert not exp.admits(50.51) and not exp.admits(float("nan"))
    assert Expected(50.0, 0.0).admits(50.0)


def test_profile_validation(recipe_cls):
    with pytest.raises(ReproduceError, match="Profile.name"):
        Profile("medium", recipe_cls(1, 1.0, 1.0))
    with pytest.raises(ReproduceError, match="recipe must be an instance"):
        Profile("smoke", {"epochs": 1})
    with pytest.raises(ReproduceError, match="Expected"):
        Profile("smoke", recipe_cls(1, 1.0, 1.0), {"clean": 90.0})
    with pytest.raises(ReproduceError, match="tolerance must be >= 0"):
        Profile("smoke", recipe_cls(1, 1.0, 1.0), {"clean": (90.0, -1.0)})
    profile = Profile("smoke", recipe_cls(1, 1.0, 1.0), {"clean": (90.0, 1.0)})  # detectron2-style tuple
    assert profile.expected["clean"] == Expected(90.0, 1.0)


def test_source_validation():
    with pytest.raises(ReproduceError, match="Source.row"):
        Source("paper", "venue", "Table 1", "")
    assert "Table 1" in Source("paper", "venue", "Table 1", "MLP").short()


def test_format_eps():
    assert format_eps(8 / 255) == "8/255"
    assert format_eps(2 / 255) == "2/255"
    assert format_eps(0.3) == "0.3"
    assert format_eps(1.58) == "1.58"
    assert format_eps(0.0) == "0"
    assert format_eps(8.8 / 255) == "8.8/255"
    assert format_eps(0.1) == "0.1"
    assert format_eps(0.123456) == "0.1235"
    assert format_eps(0.03137) == "8/255"  # as the papers' scripts write it
    assert format_eps(0.0078425) == "2/255"
    assert format_eps(0.15686) == "40/255"


def test_to_json_is_json_and_names_types(make_spec):
    data = make_spec().to_json()
    text = json.dumps(data)
    assert data["id"] == "lipnorm-digits0-fake"
    assert data["profiles"]["smoke"]["recipe"]["__type__"].endswith(":FakeRecipe")
    assert data["profiles"]["quick"]["expected"]["clean"] == {"__type__": "reproduce.spec:Expected",
                                                              "value": 90.0, "tolerance": 1.0}
    assert math.isclose(json.loads(text)["eps_test"], 8 / 255)


def test_run_context_log_writes_tsv(tmp_path):
    ctx = RunContext(run_dir=tmp_path, data_dir=None, device="cpu", resume=False, eval_only=None, seed=0)
    ctx.log("train.log", epoch=1, loss=0.5)
    ctx.log("train.log", epoch=2, loss=0.25)
    assert (tmp_path / "train.log").read_text() == "epoch\tloss\n1\t0.5\n2\t0.25\n"
