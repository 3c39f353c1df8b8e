"""The lirpa table specs, one smoke run through ``reproduce`` end to end, and ``--eval-only``."""

from __future__ import annotations

import json

import pytest

reproduce = pytest.importorskip("reproduce")

from certcore.data import dataset_info  # noqa: E402
from lirpa.training import TrainConfig  # noqa: E402
from lirpa.zoo import MODELS  # noqa: E402
from reproduce import registry, runner  # noqa: E402
from reproduce.tables import lirpa as tables  # noqa: E402

IDS = [
    "lirpa-cifar8-cnn7bn",
    "lirpa-cifar8-densenet",
    "lirpa-cifar8-wrn",
    "lirpa-cifar8-resnext",
    "lirpa-tinyimagenet1-wrn",
    "lirpa-imagenet641-wrn",
    "lirpa-mnist03",
]


QUOTED = {
    "lirpa-cifar8-cnn7bn": {"verified_err": 66.62},
    "lirpa-tinyimagenet1-wrn": {"clean_err": 72.18, "verified_err": 84.14},
}


def test_the_rows_are_registered_with_the_scripts_recipes() -> None:
    assert registry.ids("lirpa") == sorted(IDS)
    for table_id in IDS:
        spec = registry.get(table_id)
        assert spec.experiment == "lirpa.experiment:run"
        assert all(isinstance(p.recipe, TrainConfig) for p in spec.profiles.values())
        assert spec.profiles["smoke"].synthetic_data
        full = spec.profiles["full"].recipe
        assert (full.eps, full.eps_train) == (spec.eps_test, spec.eps_train)
        # no number is made up: only two rows carry numbers, each quoted by a named secondary source
        # (see reproduce/tables/lirpa.py); the rest were not found
        assert spec.paper == QUOTED.get(table_id, {}) and spec.profiles["full"].expected == {}
        assert ("secondary source" in spec.profiles["full"].notes) == (table_id in QUOTED)
    cnn7 = registry.get("lirpa-cifar8-cnn7bn").profiles["full"].recipe
    assert cnn7 == tables.CIFAR_FULL
    assert (cnn7.method, cnn7.batch, cnn7.epochs, cnn7.milestones) == (
        "CROWN-IBP+loss-fusion", 256, 2000, (1400, 1700))
    assert (cnn7.ramp_start, cnn7.ramp_length, cnn7.ramp_mid, cnn7.grad_clip) == (100, 801, 0.4, 8.0)
    assert cnn7.eps_train == pytest.approx(8.8 / 255) and cnn7.eps == pytest.approx(8 / 255)
    models = {t: registry.get(t).profiles["full"].recipe.model for t in IDS[:4]}
    assert models == {
        "lirpa-cifar8-cnn7bn": "cnn_7layer_bn",
        "lirpa-cifar8-densenet": "densenet",
        "lirpa-cifar8-wrn": "wide_resnet",
        "lirpa-cifar8-resnext": "resnext",
    }
    # the ImageNet rows: their WideResNets are zoo specs, their datasets certcore datasets, and the model
    # builds on the recipe's input (56×56 crops) with the dataset's classes
    for table_id, name, classes in (
        ("lirpa-tinyimagenet1-wrn", "wide_resnet_imagenet64", 200),
        ("lirpa-imagenet641-wrn", "wide_resnet_imagenet64_1000class", 1000),
    ):
        spec = registry.get(table_id)
        full = spec.profiles["full"].recipe
        assert full.model == name and spec.model is MODELS[name]
        assert f"lirpa.zoo {name}" in spec.profiles["full"].notes and "yet" not in spec.profiles["full"].notes
        info = dataset_info(full.dataset, full.normalization)
        assert (info.input_shape, info.num_classes) == ((3, 56, 56), classes)
        assert MODELS[name].build(info.input_shape, info.num_classes).linear.out_features == classes
    quick = registry.get("lirpa-mnist03").profiles["quick"]
    assert not quick.synthetic_data and quick.recipe == tables.MNIST_QUICK
    assert (quick.recipe.dataset, quick.recipe.model, quick.recipe.eps) == ("mnist", "cnn_4layer", 0.3)


def test_smoke_run_then_eval_only(tmp_path) -> None:
    spec = registry.get("lirpa-mnist03")
    outcome = runner.run_table(spec, "smoke", out=tmp_path / "run", device="cpu", echo=lambda s: None)
    assert outcome.passed, outcome.checks
    run = tmp_path / "run"
    for name in ("REPORT.md", "results.json", "train.log", "test.log", "log.txt", "checkpoint.pt"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "results.json").read_text())["metrics"]
    assert metrics["verified_acc"] <= metrics["pgd_acc"] <= metrics["clean_acc"]
    again = runner.run_table(
        spec, "smoke", out=tmp_path / "eval", device="cpu", eval_only=run / "checkpoint.pt",
        echo=lambda s: None,
    )
    assert again.results["metrics"]["clean_acc"] == metrics["clean_acc"]
    assert again.results["metrics"]["verified_acc"] == metrics["verified_acc"]


@pytest.mark.parametrize("table_id", ["lirpa-cifar8-cnn7bn"])  # the others: tests/reproduce smoke
def test_smoke_runs_of_the_loss_fusion_rows(tmp_path, table_id) -> None:
    outcome = runner.run_table(registry.get(table_id), "smoke", out=tmp_path / "run", device="cpu",
                               echo=lambda s: None)
    assert outcome.passed, outcome.checks
    assert set(outcome.results["metrics"]) >= {"clean_acc", "pgd_acc", "verified_acc"}
