"""A results directory never writes through a link planted in it: the lock, temporary files and
plots/ are opened without following symlinks, and a directory whose entries are symlinks is
refused with a one-line message."""
from __future__ import annotations

import os

import pytest

from rf2.cli import main
from rf2.store import ResultsFormatError, ResultsStore, atomic_write


@pytest.fixture
def victim(tmp_path):
    v = tmp_path / "victim.txt"
    v.write_text("precious\n")
    return v


def test_a_planted_lock_symlink_is_refused_and_its_target_untouched(tmp_path, victim, tiny_sweep):
    out = tmp_path / "res"
    out.mkdir()
    (out / ".lock").symlink_to(victim)
    with pytest.raises(ResultsFormatError, match=r"\.lock.*symlink"):
        tiny_sweep(out).run()
    assert victim.read_text() == "precious\n"


def test_temporary_names_are_not_predictable(tmp_path, victim):
    target = tmp_path / "results.csv"
    for name in (f".results.csv.{os.getpid()}.tmp", ".results.csv.tmp"):
        (tmp_path / name).symlink_to(victim)
    atomic_write(target, "a,b\n1,2\n")
    assert target.read_text() == "a,b\n1,2\n" and not target.is_symlink()
    assert victim.read_text() == "precious\n"


def test_atomic_write_replaces_a_symlink_instead_of_writing_through_it(tmp_path, victim):
    link = tmp_path / "sweep.toml"
    link.symlink_to(victim)
    atomic_write(link, "x")
    assert not link.is_symlink() and link.read_text() == "x" and victim.read_text() == "precious\n"


@pytest.mark.parametrize("entry", ["plots", "runs", "tiers", "results.csv", "rf2-results.json"])
def test_symlinked_entries_are_refused_by_sweep_and_plot(tmp_path, capsys, entry, tiny_sweep):
    out = tmp_path / "res"
    tiny_sweep(out).run()
    elsewhere = tmp_path / "elsewhere"
    (out / entry).rename(elsewhere) if (out / entry).exists() else elsewhere.mkdir()
    (out / entry).symlink_to(elsewhere)
    before = sorted(p.name for p in elsewhere.iterdir()) if elsewhere.is_dir() else elsewhere.read_bytes()
    assert main(["plot", str(out)]) == 2
    err = capsys.readouterr().err
    assert entry in err and "symlink" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ResultsFormatError, match="symlink"):
        tiny_sweep(out).run()
    after = sorted(p.name for p in elsewhere.iterdir()) if elsewhere.is_dir() else elsewhere.read_bytes()
    assert after == before  # nothing written through the link


def test_symlinked_run_records_are_not_results(tmp_path, tiny_sweep):
    out = tmp_path / "res"
    tiny_sweep(out).run()
    store = ResultsStore(out)
    rid, _ = next(iter(store.finished().items()))
    rec = out / "runs" / f"{rid}.json"
    real = tmp_path / "record.json"
    rec.rename(real)
    rec.symlink_to(real)
    assert rid not in store.finished()
