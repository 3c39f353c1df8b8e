"""The package imports with certcore alone; its public names are frozen here."""

import importlib

EXPECTED_ALL = [
    "CrossEntropyLoss",
    "EpochSpec",
    "EvalPlan",
    "HingeLoss",
    "HybridConfig",
    "HybridModel",
    "MLPConfig",
    "MLPModel",
    "MeanShift",
    "MixtureLoss",
    "NormDist",
    "NormDistBase",
    "NormDistConv",
    "PRESETS",
    "RecipeSchedule",
    "ScheduleState",
    "TrainRecipe",
    "__version__",
    "at_p",
    "build_model",
    "get_p",
    "is_inf_and_eval",
    "set_p",
]


def test_public_api_is_frozen() -> None:
    module = importlib.import_module("linfdist")
    assert sorted(module.__all__) == sorted(EXPECTED_ALL)
    for name in module.__all__:
        assert hasattr(module, name), name
    for sub in (
        "layers",
        "models",
        "head",
        "losses",
        "schedule",
        "recipes",
        "certify",
        "data",
        "train",
        "experiment",
    ):
        importlib.import_module(f"linfdist.{sub}")
