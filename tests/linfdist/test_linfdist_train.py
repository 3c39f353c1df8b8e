"""End to end on generated data: training improves certified accuracy, logs, resume, bad checkpoints."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from certcore.checkpoint import CheckpointError
from linfdist import HybridConfig, MixtureLoss, MLPConfig
from linfdist.data import synthetic_data
from linfdist.losses import CrossEntropyLoss
from linfdist.recipes import PRESETS, EvalPlan, TrainRecipe
from linfdist.schedule import EpochSpec
from linfdist.train import Trainer, evaluate_checkpoint, make_optimizer, train

EVAL = EvalPlan(
    every=4,
    last=1,
    certify_train=True,
    pgd_during_training=True,
    pgd_from=0.5,
    pgd_every=4,
    pgd_steps=10,
    train_cert_subset=128,
)


def tiny_recipe(**changes) -> TrainRecipe:
    recipe = TrainRecipe(
        "digits",
        MLPConfig(depth=4, width=80),
        MixtureLoss(0.05, 0.005),
        EpochSpec(0, 0, 2, 8, 10),
        eps_train=0.25,
        eps_test=0.08,
        batch_size=32,
        normalization="none",
        augment=False,
        eval=EVAL,
        checkpoint_every=2,
    )
    return recipe.with_(**changes)


@pytest.fixture(scope="module")
def data():
    return synthetic_data("digits", n_train=512, n_test=128, normalization="none", seed=3)


def test_training_improves_certified_accuracy_and_writes_the_logs(tmp_path, data) -> None:
    recipe = tiny_recipe()
    before = Trainer(recipe, data, seed=0)
    before.apply_schedule(recipe.epochs.total)
    init = before.certify(data.test_batches(64, None, "cpu"))
    assert init.certified_acc < 20
    result = train(recipe, data, tmp_path / "run", seed=0)
    m = result.metrics
    assert set(m) == {"clean_acc", "pgd_acc", "certified_acc"}
    assert m["certified_acc"] > init.certified_acc + 30
    assert m["certified_acc"] <= m["pgd_acc"] <= m["clean_acc"]
    run = tmp_path / "run"
    for name in ("log.txt", "train.log", "test.log", "train_inf.log", "test_inf.log", "checkpoint.pt"):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))
    header = (run / "train.log").read_text().splitlines()[0].split("\t")
    assert header[0] == "epoch" and {"loss", "acc", "certified_fake", "p", "eps", "lam", "lr"} <= set(header)
    test_rows = (run / "test.log").read_text().splitlines()
    assert len(test_rows) == 1 + 3  # epochs 3, 7 (every 4) and 9 (the last one)
    assert {"p", "acc", "inf_acc", "certified", "pgd_acc", "train_certified"} <= set(test_rows[0].split("\t"))
    log = (run / "log.txt").read_text()
    assert "number of params" in log and "certified acc" in log and "adversarial attack acc" in log
    assert (run / "test_inf.log").read_text().splitlines()[-1].startswith(str(recipe.epochs.total))


def test_resume_gives_the_same_result(tmp_path, data) -> None:
    recipe = tiny_recipe(
        epochs=EpochSpec(0, 0, 1, 3, 4),
        eval=replace(EVAL, certify_train=False, pgd_steps=5),
        checkpoint_every=1,
    )
    straight = train(recipe, data, tmp_path / "a", seed=0)
    first = train(recipe, data, tmp_path / "b", seed=0, stop_after_epoch=2)
    assert first.metrics == {} and not first.fit.finished
    resumed = train(recipe, data, tmp_path / "b", seed=0, resume=True)
    assert resumed.fit.resumed_from == 2
    assert resumed.metrics == straight.metrics
    for (name, a), b in zip(
        straight.trainer.model.state_dict().items(), resumed.trainer.model.state_dict().values()
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    rows = (tmp_path / "b" / "train.log").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == [str(e) for e in range(recipe.epochs.total)]


def test_checkpoint_of_another_config_is_a_clear_error(tmp_path, data) -> None:
    recipe = tiny_recipe(
        epochs=EpochSpec(0, 0, 0, 1, 2), eval=replace(EVAL, pgd_steps=0, certify_train=False)
    )
    train(recipe, data, tmp_path / "run", seed=0)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    metrics = evaluate_checkpoint(recipe, data, ckpt)
    assert 0 <= metrics["certified_acc"] <= metrics["clean_acc"] <= 100
    wider = recipe.with_(model=MLPConfig(depth=4, width=96))
    with pytest.raises(CheckpointError, match="was trained with model"):
        evaluate_checkpoint(wider, data, ckpt)
    other_shape = synthetic_data("digits16", n_train=64, n_test=32, normalization="none")
    with pytest.raises(CheckpointError, match="input_shape"):
        evaluate_checkpoint(recipe, other_shape, ckpt)
    with pytest.raises(CheckpointError, match="different spec"):
        train(wider, data, tmp_path / "run", seed=0, resume=True)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        evaluate_checkpoint(recipe, data, junk)


def test_hybrid_trains_through_the_ibp_head(tmp_path, data) -> None:
    recipe = tiny_recipe(
        model=HybridConfig(depth=4, width=80, hidden=32),
        loss=CrossEntropyLoss(),
        epochs=EpochSpec(0, 2, 1, 5, 6),
        eps_train=0.04,
        eps_test=0.02,
        lr=0.02,
        batch_size=64,
        eval=replace(EVAL, certify_train=False, pgd_during_training=False),
    )
    m = train(recipe, data, tmp_path / "run", seed=0).metrics
    assert m["certified_acc"] > 30 and m["certified_acc"] <= m["pgd_acc"] <= m["clean_acc"]


def test_optimizer_groups_and_presets() -> None:
    recipe = PRESETS["cifar8"]
    with torch.device("meta"):
        from linfdist.models import build_model

        model = build_model(MLPConfig(depth=3, width=8), (1, 2, 2))
    opt = make_optimizer(model, recipe)
    assert [g["lr"] for g in opt.param_groups] == [0.03, 0.006]
    assert opt.param_groups[1]["params"] == [model.scalar]
    assert (
        opt.defaults["betas"] == (0.9, 0.99)
        and opt.defaults["eps"] == 1e-10
        and opt.defaults["weight_decay"] == 0
    )
    assert PRESETS["mnist03"].epochs.as_string() == "0,0,25,400,450"
    assert PRESETS["cifar8-v1hybrid"].epochs.as_string() == "0,100,100,750,800"
    assert math.isinf(PRESETS["cifar2"].schedule(98).p_at(1250))


def test_bad_recipes() -> None:
    with pytest.raises(ValueError, match="eps_train must be a finite number >= 0"):
        tiny_recipe(eps_train=-0.1)
    with pytest.raises(ValueError, match="must not decrease"):
        tiny_recipe(p_start=8.0, p_end=4.0)
    with pytest.raises(ValueError, match="divide by zero"):
        tiny_recipe(epochs=EpochSpec(0, 2, 2, 4, 6))
    with pytest.raises(ValueError, match="eps_test must be > 0"):
        tiny_recipe(eps_test=0.0)
