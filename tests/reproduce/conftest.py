"""A fake table spec and a fake experiment, to test the reproduce framework without a paper package."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass

import pytest

from reproduce import registry
from reproduce.spec import Expected, Profile, RunContext, Source, TableSpec

FAKE_ID = "lipnorm-digits0-fake"
FAKE_MODULE = "reproduce_fake_experiment"


@dataclass(frozen=True)
class FakeRecipe:
    epochs: int
    clean: float
    certified: float
    seed: int = 7
    crash_at_epoch: int | None = None


@dataclass(frozen=True)
class FakeModel:
    width: int = 4


def fake_experiment(spec: TableSpec, profile: Profile, ctx: RunContext) -> dict[str, float]:
    """Trains nothing: logs a curve per epoch, checkpoints, resumes, and returns the recipe's numbers."""
    recipe = profile.recipe
    calls = sys.modules[FAKE_MODULE].calls
    if ctx.eval_only is not None:
        state = json.loads(ctx.eval_only.read_text())
        calls.append({"eval_only": str(ctx.eval_only), "seed": ctx.seed})
        return {"clean": state["clean"], "certified": state["certified"]}
    checkpoint = ctx.run_dir / "checkpoint.json"
    start = json.loads(checkpoint.read_text())["epoch"] if ctx.resume and checkpoint.exists() else 0
    calls.append({"start": start, "resume": ctx.resume, "seed": ctx.seed, "device": ctx.device,
                  "data_dir": ctx.data_dir, "run_dir": ctx.run_dir})
    for epoch in range(start + 1, recipe.epochs + 1):
        if recipe.crash_at_epoch == epoch and not ctx.resume:
            raise RuntimeError("simulated crash")
        frac = epoch / recipe.epochs
        ctx.log("train.log", epoch=epoch, loss=round(2.3 * (1 - frac) + 0.1, 4), acc=recipe.clean * frac)
        ctx.log("test.log", epoch=epoch, acc=recipe.clean * frac, certified=recipe.certified * frac)
        checkpoint.write_text(json.dumps({"epoch": epoch, "clean": recipe.clean,
                                          "certified": recipe.certified}))
    return {"clean": recipe.clean, "pgd": recipe.clean - 5.0, "certified": recipe.certified}


def make_fake_spec(table_id: str = FAKE_ID, **overrides) -> TableSpec:
    profiles = {
        # smoke: within tolerance
        "smoke": Profile("smoke", FakeRecipe(3, 90.0, 80.0), {"clean": Expected(90.2, 1.0),
                                                              "certified": Expected(80.0, 0.5)},
                         synthetic_data=True, hardware="any CPU", time_hint="1 s"),
        # quick: clean is 5 points below what it expects
        "quick": Profile("quick", FakeRecipe(2, 85.0, 75.0), {"clean": Expected(90.0, 1.0),
                                                             "certified": Expected(75.0, 1.0)},
                         hardware="1 CPU", time_hint="2 s"),
        "full": Profile("full", FakeRecipe(4, 91.0, 80.0, crash_at_epoch=2),
                        {"clean": Expected(91.0, 1.0), "certified": Expected(80.0, 1.0)},
                        hardware="1x fake GPU", time_hint="4 s", notes="crashes once at epoch 2"),
    }
    kwargs = dict(
        id=table_id, package="lipnorm",
        source=Source("Fake paper", "Test'26", "Table 0", "fake row", "https://example.org/fake"),
        dataset="digits", eps_test=8 / 255, eps_train=8.8 / 255, model=FakeModel(),
        profiles=profiles, paper={"clean": 91.0, "pgd": 86.0, "certified": 80.0},
        experiment=f"{FAKE_MODULE}:run", description="A fake table for the framework's tests.",
    )
    kwargs.update(overrides)
    return TableSpec(**kwargs)


@pytest.fixture
def fake_experiment_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType(FAKE_MODULE)
    module.run = fake_experiment
    module.calls = []
    monkeypatch.setitem(sys.modules, FAKE_MODULE, module)
    return module


@pytest.fixture
def fake_spec(fake_experiment_module: types.ModuleType) -> TableSpec:
    spec = make_fake_spec()
    with registry.registered(spec):
        yield spec


@pytest.fixture
def make_spec():
    """The factory ``make_fake_spec(table_id=FAKE_ID, **overrides)`` (test modules cannot import conftest)."""
    return make_fake_spec


@pytest.fixture
def recipe_cls():
    return FakeRecipe
