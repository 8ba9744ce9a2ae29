"""What `hxt` does with store files that are not stores, and with stores it may only read.

Every refusal is exit 2 with one line naming the file, and leaves every byte as it was; read
commands (`sweep status`, `report`, `export`) never create or change a file.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from tests.analysis.synthetic_store import build_store
from tests.sweeps.cli_helpers import (
    assert_one_line_error,
    digest,
    run_cli,
    run_read_only,
    sweep_file,
)


def _text(d):
    (d / "hxt.sqlite").write_text("run_id,status\nabc,done\n")


def _empty(d):
    (d / "hxt.sqlite").write_bytes(b"")


def _foreign(d):
    db = sqlite3.connect(d / "hxt.sqlite")
    db.execute("CREATE TABLE photos (id INTEGER, path TEXT)")
    db.execute("INSERT INTO photos VALUES (1, 'a.jpg')")
    db.commit()
    db.close()


def _foreign_app(d):  # another program's database that happens to use our table names
    db = sqlite3.connect(d / "hxt.sqlite")
    db.executescript("PRAGMA application_id = 42; CREATE TABLE sweep (k); CREATE TABLE runs (k);")
    db.executescript("CREATE TABLE metrics (k); CREATE TABLE evals (k);")
    db.close()


def _truncated(d):
    build_store(d)
    os.truncate(d / "hxt.sqlite", (d / "hxt.sqlite").stat().st_size // 2)


def _corrupted(d):
    build_store(d)
    data = bytearray((d / "hxt.sqlite").read_bytes())
    data[100:4096] = b"\xab" * (4096 - 100)  # the schema page
    (d / "hxt.sqlite").write_bytes(bytes(data))


def _directory(d):
    (d / "hxt.sqlite").mkdir()
    (d / "hxt.sqlite" / "notes.txt").write_text("not a store")


BAD_STORES = {
    "text file": _text,
    "zero-byte file": _empty,
    "foreign SQLite file": _foreign,
    "foreign application id": _foreign_app,
    "truncated store": _truncated,
    "corrupted store": _corrupted,
    "hxt.sqlite is a directory": _directory,
}
READ_COMMANDS = {
    "status": lambda d, tmp: ["sweep", "status", d],
    "report": lambda d, tmp: ["report", d, "--out", tmp / "report"],
    "export": lambda d, tmp: ["export", d, "--format", "csv", "--out", tmp / "export"],
}


@pytest.mark.parametrize("command", sorted(READ_COMMANDS))
@pytest.mark.parametrize("kind", sorted(BAD_STORES))
def test_read_commands_refuse_what_is_not_a_store_and_write_nothing(tmp_path, capsys, kind, command):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    BAD_STORES[kind](sweep)
    before = digest(tmp_path)
    code, out, err = run_cli(capsys, *READ_COMMANDS[command](sweep, tmp_path))
    assert_one_line_error(code, out, err, str(sweep / "hxt.sqlite"))
    assert digest(tmp_path) == before


@pytest.mark.parametrize("kind", sorted(BAD_STORES))
def test_sweep_run_refuses_what_is_not_a_store_and_writes_nothing(tmp_path, capsys, kind):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    BAD_STORES[kind](sweep)
    path = sweep_file(tmp_path)
    before = digest(tmp_path)
    code, out, err = run_cli(capsys, "sweep", "run", path, "--out", sweep, "--quiet")
    assert_one_line_error(code, out, err, str(sweep), "hxt.sqlite")
    assert digest(tmp_path) == before


def test_read_commands_of_a_missing_store_name_it(tmp_path, capsys):
    for argv in (["sweep", "status", tmp_path / "absent"], ["export", tmp_path / "absent"]):
        code, out, err = run_cli(capsys, *argv)
        assert_one_line_error(code, out, err, str(tmp_path / "absent"), "no sweep store")
    (tmp_path / "empty").mkdir()
    code, out, err = run_cli(capsys, "sweep", "status", tmp_path / "empty")
    assert_one_line_error(code, out, err, str(tmp_path / "empty"), "hxt.sqlite")
    assert digest(tmp_path) == {"empty": "dir"}


@pytest.mark.parametrize(
    "where, named",
    [
        (lambda tmp: tmp / "a_file", "is a file"),
        (lambda tmp: tmp / "a_file" / "sweep", "is a file"),
        (lambda tmp: tmp / "a_file" / "deeper" / "sweep", "is a file"),
    ],
)
def test_sweep_run_refuses_an_out_that_is_or_lies_under_a_file(tmp_path, capsys, where, named):
    (tmp_path / "a_file").write_text("x")
    path = sweep_file(tmp_path)
    before = digest(tmp_path)
    code, out, err = run_cli(capsys, "sweep", "run", path, "--out", where(tmp_path), "--quiet")
    assert_one_line_error(code, out, err, "--out", str(tmp_path / "a_file"), named)
    assert digest(tmp_path) == before


@pytest.mark.slow
def test_status_report_and_export_read_a_store_on_read_only_media(tmp_path):
    sweep = build_store(tmp_path / "sweep")
    before = digest(sweep)
    status = run_read_only(sweep, "sweep", "status", sweep)
    assert status.returncode == 0, status.stderr
    assert "sweep demo" in status.stdout and "16 done" in status.stdout
    report = run_read_only(sweep, "report", sweep, "--out", tmp_path / "report")
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report" / "report.md").is_file()
    export = run_read_only(sweep, "export", sweep, "--format", "csv", "--out", tmp_path / "export")
    assert export.returncode == 0, export.stderr
    assert (tmp_path / "export" / "runs.csv").is_file()
    # the default report folder lies inside the read-only sweep directory: refused in one line
    inside = run_read_only(sweep, "report", sweep)
    assert_one_line_error(inside.returncode, inside.stdout, inside.stderr, str(sweep / "report"))
    assert digest(sweep) == before


@pytest.mark.slow
def test_a_wal_store_on_read_only_media(tmp_path):
    """A store left in WAL mode without its index file is read as immutable; one whose log still
    holds results is refused, since reading it without the log would show stale results."""
    clean = build_store(tmp_path / "clean")
    db = sqlite3.connect(clean / "hxt.sqlite")
    db.execute("PRAGMA journal_mode=WAL")  # stays in the header; closing removes -wal and -shm
    db.close()
    result = run_read_only(clean, "sweep", "status", clean)
    assert result.returncode == 0 and "16 done" in result.stdout, result.stderr
    assert sorted(p.name for p in clean.iterdir()) == ["hxt.sqlite"]

    logged = build_store(tmp_path / "logged")
    script = (
        "import os, sqlite3, sys; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
        "db.execute('PRAGMA journal_mode=WAL'); db.execute(\"UPDATE runs SET status = 'pending'\"); "
        "os._exit(0)"  # a killed driver: the update lives only in the write-ahead log
    )
    subprocess.run([sys.executable, "-c", script, logged / "hxt.sqlite"], check=True)
    (logged / "hxt.sqlite-shm").unlink()
    before = digest(logged)
    result = run_read_only(logged, "sweep", "status", logged)
    assert_one_line_error(result.returncode, result.stdout, result.stderr, "hxt.sqlite-wal", "read-only")
    assert digest(logged) == before


@pytest.mark.slow
def test_sweep_run_refuses_a_read_only_out(tmp_path):
    sweep = build_store(tmp_path / "sweep")
    path = sweep_file(tmp_path)
    before = digest(tmp_path)
    result = run_read_only(sweep, "sweep", "run", path, "--out", sweep, "--quiet")
    assert_one_line_error(result.returncode, result.stdout, result.stderr, "--out", str(sweep))
    assert digest(tmp_path) == before


def test_status_of_a_finished_store_creates_nothing_beside_it(tmp_path, capsys):
    sweep = build_store(tmp_path / "sweep")
    before = digest(tmp_path)
    code, out, _ = run_cli(capsys, "sweep", "status", sweep)
    assert code == 0 and "driver: none" in out
    assert digest(tmp_path) == before
