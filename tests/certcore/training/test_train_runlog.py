"""Run directories: no clobbering, log.txt, TSV tables and their truncation on resume, TensorBoard."""

from __future__ import annotations

import pytest

from certcore.runlog import RunDirectory, RunDirectoryError, TableLog


def test_log_writes_file_and_stdout(tmp_path, capsys):
    with RunDirectory(tmp_path / "run") as run:
        run.log("hello")
        run.log("world")
    assert (tmp_path / "run" / "log.txt").read_text() == "hello\nworld\n"
    assert capsys.readouterr().out == "hello\nworld\n"


def test_a_directory_holding_a_run_is_not_clobbered(tmp_path):
    path = tmp_path / "run"
    with RunDirectory(path) as run:
        run.log("first run")
        run.table("train.log", ["epoch", "loss"]).log([0, 1.5])
    with pytest.raises(RunDirectoryError, match="already holds a run") as error:
        RunDirectory(path)
    assert "resume=True" in str(error.value) and "overwrite=True" in str(error.value)
    assert (path / "log.txt").read_text() == "first run\n"
    assert (path / "train.log").read_text() == "epoch\tloss\n0\t1.5\n"


def test_overwrite_deletes_only_the_runs_files(tmp_path):
    path = tmp_path / "run"
    with RunDirectory(path) as run:
        run.log("old")
        run.table("train.log", ["epoch"]).log([0])
    (path / "notes.md").write_text("mine")
    with RunDirectory(path, overwrite=True) as run:
        run.log("new")
    assert (path / "log.txt").read_text() == "new\n"
    assert not (path / "train.log").exists()
    assert (path / "notes.md").read_text() == "mine"


def test_unrelated_files_do_not_make_a_run(tmp_path):
    (tmp_path / "README").write_text("x")
    with RunDirectory(tmp_path) as run:
        run.log("ok")
    assert (tmp_path / "README").read_text() == "x"


def test_a_directory_opened_but_never_written_does_not_hold_a_run(tmp_path):
    with RunDirectory(tmp_path / "run", resume=True):
        pass
    assert list((tmp_path / "run").iterdir()) == []
    with RunDirectory(tmp_path / "run") as run:
        run.log("fresh start")
    with pytest.raises(ValueError, match="closed"):
        run.log("too late")


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="pick one"):
        RunDirectory(tmp_path, resume=True, overwrite=True)


def test_a_file_in_place_of_the_directory_is_refused(tmp_path):
    (tmp_path / "run").write_text("x")
    with pytest.raises(RunDirectoryError, match="not a directory"):
        RunDirectory(tmp_path / "run")


def test_non_main_process_writes_nothing(tmp_path, capsys):
    with RunDirectory(tmp_path / "run", main_process=False) as run:
        run.log("quiet")
        run.table("train.log", ["epoch"]).log([0])
        run.scalars(0, {"loss": 1.0})
        assert list(run.progress(range(3))) == [0, 1, 2]
    assert not (tmp_path / "run").exists()
    assert capsys.readouterr().out == ""


def test_table_rows_are_on_disk_after_each_log(tmp_path):
    table = TableLog(tmp_path / "train.log", ["epoch", "loss", "acc"])
    table.log({"epoch": 0, "loss": 0.25, "acc": 0.5})
    assert (tmp_path / "train.log").read_text() == "epoch\tloss\tacc\n0\t0.25\t0.5\n"
    table.log([1, 0.1, float("nan")])
    assert table.rows()[1] == {"epoch": "1", "loss": "0.1", "acc": "nan"}
    with pytest.raises(ValueError, match=r"missing \['acc'\]"):
        table.log({"epoch": 2, "loss": 0.1})
    with pytest.raises(ValueError, match="2 values, expected 3"):
        TableLog(tmp_path / "train.log", ["epoch", "loss", "acc"]).log([2, 0.1])


def test_table_floats_round_trip_exactly(tmp_path):
    value = 0.1 + 0.2
    table = TableLog(tmp_path / "t.log", ["epoch", "x"])
    table.log([0, value])
    assert float(table.rows()[0]["x"]) == value


def test_resume_truncates_rows_beyond_the_checkpoint(tmp_path):
    path = tmp_path / "run"
    with RunDirectory(path) as run:
        for epoch in range(5):
            run.table("train.log", ["epoch", "loss"]).log([epoch, 1.0 / (epoch + 1)])
    with RunDirectory(path, resume=True) as run:
        run.rewind(2)  # the checkpoint holds epoch 2: epochs 3 and 4 will be trained again
        table = run.table("train.log", ["epoch", "loss"])
        assert [row["epoch"] for row in table.rows()] == ["0", "1", "2"]
        table.log([3, 0.3])
    text = (path / "train.log").read_text().splitlines()
    assert text == ["epoch\tloss", "0\t1.0", "1\t0.5", "2\t0.3333333333333333", "3\t0.3"]


def test_reopening_drops_a_row_cut_short_and_checks_the_header(tmp_path):
    path = tmp_path / "train.log"
    path.write_text("epoch\tloss\n0\t1.0\n1\t0.")  # a crash while writing row 1
    table = TableLog(path, ["epoch", "loss"])
    assert path.read_text() == "epoch\tloss\n0\t1.0\n"
    table.log([1, 0.5])
    assert [row["epoch"] for row in table.rows()] == ["0", "1"]
    with pytest.raises(ValueError, match="has columns"):
        TableLog(path, ["epoch", "loss", "acc"])


def test_scalars_are_written_and_purged_on_resume(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = tmp_path / "run"
    with RunDirectory(path) as run:
        for step in range(4):
            run.scalars(step, {"loss": float(step)}, prefix="train/")
    with RunDirectory(path, resume=True) as run:
        run.rewind(1)
        for step in (2, 3):
            run.scalars(step, {"loss": 10.0 + step}, prefix="train/")
    events = EventAccumulator(str(path))
    events.Reload()
    points = [(event.step, event.value) for event in events.Scalars("train/loss")]
    assert points == [(0, 0.0), (1, 1.0), (2, 12.0), (3, 13.0)]


def test_progress_is_silent_when_not_a_terminal(tmp_path):
    with RunDirectory(tmp_path) as run:
        bar = run.progress(range(5), desc="epoch 0")
        assert list(bar) == list(range(5))
        assert bar.disable  # pytest captures stderr: not a tty
