"""The command line: run, tiers, list, config files, errors."""
from __future__ import annotations

import pytest

from rf2.cli import main

SYN = ["--dataset", "synthetic", "--dataset-options", "n_users=200", "n_items=100", "events_per_user=15"]


def test_run_prints_per_tier_table_and_writes_rows(tmp_path, capsys):
    out = tmp_path / "rows.csv"
    assert main(["run", *SYN, "--clients-per-round", "20", "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for word in ("low", "mid", "high", "overall", "auc"):
        assert word in text
    import pandas as pd

    rows = pd.read_csv(out)
    assert set(rows["tier"]) == {"low", "mid", "high", "overall"} and (rows["clients_per_round"] == 20).all()


def test_config_file_and_flag_override(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('[run]\ndataset = "synthetic"\nclients_per_round = 25\nmapping = "dirichlet:0.5"\n'
                   '[run.dataset_options]\nn_users = 150\nn_items = 80\n')
    assert main(["run", "--config", str(cfg), "--mapping", "random", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "tiers     random" in text and "K=25" in text


def test_errors_are_one_line_with_fix(capsys):
    assert main(["run", *SYN, "--mapping", "dirichlet:-1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "alpha must be > 0" in err and "Traceback" not in err
    assert main(["run", *SYN, "--clients-per-round", "999", "--quiet"]) == 2
    assert "clients_per_round=999" in (err := capsys.readouterr().err) and "between 1 and 200" in err


def test_bad_config_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("clients_per_round = [\n")
    assert main(["run", "--config", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_tiers_report_and_plot(tmp_path, capsys):
    png = tmp_path / "tiers.png"
    assert main(["tiers", "--dataset", "synthetic", "--mapping", "random", "dirichlet:0.01", "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "mean_jsd" in text and "dirichlet:0.01" in text
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_list(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "ml-100k" in text and "dlrm" in text and "dirichlet:ALPHA" in text
    assert "activity[:R_LOW" in text and "standalone  (no collaboration" in text
