"""Mistakes on the command line stop with a one-line message naming what is wrong, before any
training: unknown config tables, unusable output paths, bad option values."""
from __future__ import annotations

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
