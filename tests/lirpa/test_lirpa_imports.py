"""The package imports on its own (with certcore only) and its public API is frozen here."""

import importlib

EXPECTED_ALL = [
    "BoundedModule",
    "BoundedTensor",
    "CrossEntropyWrapper",
    "PerturbationLpNorm",
    "UnsupportedOperationError",
]


def test_public_api():
    module = importlib.import_module("lirpa")
    assert module.__doc__ and "BoundedModule" in module.__doc__
    assert sorted(module.__all__) == sorted(EXPECTED_ALL)
    for name in EXPECTED_ALL:
        assert getattr(module, name) is not None
