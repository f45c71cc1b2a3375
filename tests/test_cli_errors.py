"""Mistakes on the command line stop with a one-line message naming what is wrong, before any
training: unknown config tables, unusable output paths, bad option values."""
from __future__ import annotations

import errno
import os

import pytest

from rf2.cli import main

SYN = ["--dataset", "synthetic", "--dataset-options", "n_users=200", "n_items=100", "events_per_user=15"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_run_refuses_an_unknown_table(tmp_path, capsys):
    cfg = tmp_path / "typo.toml"
    cfg.write_text('[rnu]\ndataset = "synthetic"\nclients_per_round = 25\n')
    assert main(["run", "--config", str(cfg), "--quiet"]) == 2
    err = one_line_error(capsys)
    assert "rnu" in err and "[run]" in err and str(cfg) in err


SWEEP = ["sweep", *SYN, "--mappings", "random", "--optimizations", "exclude-lo", "--no-noise-floor",
         "--executor", "inprocess", "--quiet"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_disk_full_or_read_only_results_directory_is_one_line(tmp_path, capsys, monkeypatch, code):
    import rf2.store

    def fail(path, data):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(rf2.store, "atomic_write", fail)
    assert main([*SWEEP, "--out", str(tmp_path / "res")]) == 2
    err = one_line_error(capsys)
    assert str(tmp_path / "res") in err and os.strerror(code) in err


def _no_training(monkeypatch):
    from rf2.simulation import Simulation

    monkeypatch.setattr(Simulation, "run", lambda self: pytest.fail("trained before checking --out"))


@pytest.mark.parametrize("where", ["directory", "under_a_file", "in_proc"])
def test_run_out_is_checked_before_training(tmp_path, capsys, monkeypatch, where):
    _no_training(monkeypatch)
    (tmp_path / "file.txt").write_text("x")
    out = {"directory": tmp_path, "under_a_file": tmp_path / "file.txt" / "rows.csv",
           "in_proc": "/proc/rf2-cannot-write-here/rows.csv"}[where]
    assert main(["run", *SYN, "--quiet", "--out", str(out)]) == 2
    assert str(out) in one_line_error(capsys)


def test_a_symlinked_cache_entry_is_refused_by_download(tmp_path, capsys, monkeypatch, server):
    state, url = server
    state["payload"] = b"not a zip"
    monkeypatch.setenv("RF2_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "cache" / "ml-100k").symlink_to(tmp_path / "elsewhere")
    assert main(["download", "ml-100k", "--url", url]) == 2
    err = one_line_error(capsys)
    assert "symlink" in err and str(tmp_path / "cache" / "ml-100k") in err
