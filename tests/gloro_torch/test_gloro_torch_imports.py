"""The package installs and imports on its own (with certcore only) and exports nothing yet."""

import importlib


def test_imports_alone_and_exports_nothing_yet():
    module = importlib.import_module("gloro_torch")
    assert module.__doc__ and "Not implemented yet" in module.__doc__
    assert [name for name in vars(module) if not name.startswith("_")] == []
