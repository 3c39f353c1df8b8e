"""The registry of table specs, the id grammar over every real spec, and the noxfile's id scan."""

from __future__ import annotations

import shutil
import textwrap

import pytest
from click.testing import CliRunner

from reproduce import registry
from reproduce.cli import main
from reproduce.spec import ID_PREFIXES, ReproduceError
from reproduce.table_ids import ID_PATTERN, TABLES_DIR, scan_table_ids


def test_every_spec_id_follows_the_grammar(make_spec, fake_experiment_module):
    """Binds every real spec; the fake one keeps the loop from being empty while there are none."""
    fake = make_spec()
    with registry.registered(fake):
        specs = registry.tables()
        assert fake.id in specs
        for table_id, spec in specs.items():
            assert table_id == spec.id
            assert ID_PATTERN.match(table_id), f"{table_id} does not follow {ID_PATTERN.pattern}"
            assert table_id.startswith(ID_PREFIXES[spec.package] + "-")
            assert set(spec.profiles) == {"smoke", "quick", "full"}


def test_no_spec_module_is_broken():
    broken = {m: u.reason for m, u in registry.unavailable().items() if u.kind == "broken"}
    assert not broken, broken


def test_ast_scan_equals_registry(tmp_path):
    """The noxfile's ``reproduce-<id>`` sessions (ids read with ``ast``) are exactly the registry's ids."""
    scanned = scan_table_ids()
    assert len(scanned) == len(set(scanned)), "an id is written twice in reproduce/tables"
    for table_id in scanned:
        assert ID_PATTERN.match(table_id), table_id
    unavailable = registry.unavailable()
    if not unavailable:
        real = sorted(i for ids in registry.modules().values() for i in ids)
        assert sorted(scanned) == real
    for module, ids in registry.modules().items():  # module by module, where some could not be imported
        one = tmp_path / module.rsplit(".", 1)[-1]
        one.mkdir()
        shutil.copy(TABLES_DIR / f"{module.rsplit('.', 1)[-1]}.py", one)
        assert sorted(scan_table_ids(one)) == sorted(ids), module


@pytest.fixture
def temp_tables(tmp_path, monkeypatch):
    """A throwaway tables package: one good module, one needing an absent package, one with a bug."""
    package = tmp_path / "certkit_temp_tables"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "good.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        from reproduce.spec import Expected, Profile, Source, TableSpec

        @dataclass(frozen=True)
        class Recipe:
            epochs: int = 1

        def _profiles():
            return {name: Profile(name, Recipe(), {"clean": Expected(50.0, 1.0)})
                    for name in ("smoke", "quick", "full")}

        SOURCE = Source("Paper", "Venue'21", "Table 1", "row")
        A = TableSpec(id="linfdist-cifar8", package="linfdist", source=SOURCE, dataset="cifar10",
                      eps_test=8 / 255, eps_train=8 / 255, model=None, profiles=_profiles(),
                      paper={"clean": 50.0}, experiment="x.y:run")
        B = TableSpec(id="linfdist-mnist03", package="linfdist", source=SOURCE, dataset="mnist",
                      eps_test=0.3, eps_train=0.3, model=None, profiles=_profiles(),
                      paper={"clean": 98.0}, experiment="x.y:run")
    '''))
    (package / "lirpa.py").write_text("import certkit_package_that_is_not_installed\n")
    (package / "buggy.py").write_text("raise ValueError('a bug in a spec module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "TABLES_PACKAGE", "certkit_temp_tables")
    monkeypatch.setattr(registry, "_tables", None)
    monkeypatch.setattr(registry, "_modules", {})
    monkeypatch.setattr(registry, "_unavailable", {})
    return package


def test_registry_collects_specs_and_survives_missing_packages(temp_tables):
    assert registry.ids() == ["linfdist-cifar8", "linfdist-mnist03"]
    assert registry.modules() == {"certkit_temp_tables.good": ["linfdist-cifar8", "linfdist-mnist03"]}
    unavailable = registry.unavailable()
    assert unavailable["certkit_temp_tables.lirpa"].kind == "missing"
    assert "certkit_package_that_is_not_installed" in unavailable["certkit_temp_tables.lirpa"].reason
    assert unavailable["certkit_temp_tables.buggy"].kind == "broken"
    assert "a bug in a spec module" in unavailable["certkit_temp_tables.buggy"].reason
    # the scan the noxfile uses sees the same ids in the module that imported
    assert sorted(scan_table_ids(temp_tables)) == ["linfdist-cifar8", "linfdist-mnist03"]

    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0, result.output
    assert "linfdist-cifar8" in result.output and "8/255 (ℓ∞)" in result.output
    assert "tables of certkit_temp_tables.lirpa are unavailable (missing)" in result.output

    with pytest.raises(ReproduceError) as info:
        registry.get("lirpa-cifar8")
    assert "certkit_temp_tables.lirpa are unavailable" in str(info.value)


def test_unknown_id_names_closest_and_known_ids(fake_spec):
    with pytest.raises(registry.UnknownTableError) as info:
        registry.get("lipnorm-digit0-fake")
    message = str(info.value)
    assert "unknown table id 'lipnorm-digit0-fake'" in message
    assert f"Did you mean: {fake_spec.id}" in message  # the closest comes first
    assert "Known ids:" in message and fake_spec.id in message

    result = CliRunner().invoke(main, ["run", "lipnorm-digit0-fake", "--profile", "smoke"])
    assert result.exit_code == 2
    assert f"Did you mean: {fake_spec.id}" in result.output


def test_registered_restores_and_refuses_duplicates(make_spec, fake_experiment_module):
    before = dict(registry.tables())
    spec = make_spec()
    with registry.registered(spec):
        assert registry.get(spec.id) is spec
        with pytest.raises(ReproduceError, match="already registered"):
            registry.register(make_spec())
        registry.register(make_spec(), replace=True)
    assert registry.tables() == before


def test_list_filters_by_package(fake_spec):
    runner = CliRunner()
    result = runner.invoke(main, ["list", "--package", "lipnorm"])
    assert result.exit_code == 0 and fake_spec.id in result.output
    assert "smoke,quick,full" in result.output
    result = runner.invoke(main, ["list", "--package", "linfdist"])
    assert fake_spec.id not in result.output
    result = runner.invoke(main, ["list", "--package", "nosuch"])
    assert result.exit_code == 2 and "unknown package 'nosuch'" in result.output


def test_normalize_package():
    assert registry.normalize_package("gloro") == "gloro_torch"
    assert registry.normalize_package("gloro-torch") == "gloro_torch"
    assert registry.normalize_package("linfdist") == "linfdist"
    with pytest.raises(ReproduceError, match="the paper packages are"):
        registry.normalize_package("certcore")


def test_show_prints_profiles(fake_spec):
    result = CliRunner().invoke(main, ["show", fake_spec.id])
    assert result.exit_code == 0, result.output
    assert "[smoke]" in result.output and "clean 90.2 ± 1" in result.output
    assert "FakeRecipe(epochs=3" in result.output
