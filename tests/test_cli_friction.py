"""Command-line friction: rf2 run's thread budget, both spellings of option tables, --version."""
from __future__ import annotations

import pytest

from rf2 import __version__
from rf2.cli import build_parser, main, settings_from_args

SYN = ["--dataset", "synthetic", "--dataset-options", "n_users=120", "n_items=50", "events_per_user=10"]


def test_run_takes_a_thread_budget(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.append(n))
    seen: list[int] = []
    assert main(["run", *SYN, "--max-rounds", "1", "--quiet", "--threads", "1"]) == 0
    assert seen == [1]
    seen.clear()
    assert main(["run", *SYN, "--max-rounds", "1", "--quiet"]) == 0
    assert seen and 1 <= seen[0] <= 4  # default min(4, cores): no collapse on a busy machine


@pytest.mark.parametrize("flags", [["--dataset-options", "{click_threshold = 4}"],
                                   ["--dataset-options", "click_threshold=4"],
                                   ["--dataset-options", "{ click_threshold = 4 }"]])
def test_dataset_options_as_inline_table_or_pairs(flags):
    args = build_parser().parse_args(["run", "--dataset", "ml-100k", *flags])
    assert settings_from_args(args, {})["dataset_options"] == {"click_threshold": 4}


def test_system_options_nested_inline_table():
    args = build_parser().parse_args(["run", "--system-options", "{low = {upload_mbps = 2.0}}"])
    assert settings_from_args(args, {})["system_options"] == {"low": {"upload_mbps": 2.0}}
    args = build_parser().parse_args(["run", "--system-options", "low={upload_mbps = 2.0}"])
    assert settings_from_args(args, {})["system_options"] == {"low": {"upload_mbps": 2.0}}


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out


def test_run_table_prints_counts_as_integers_and_no_nan(capsys):
    assert main(["run", *SYN, "--max-rounds", "2", "--quiet"]) == 0
    table = capsys.readouterr().out.split("per tier", 1)[1]
    assert "NaN" not in table
    low = next(line for line in table.splitlines() if line.startswith("low"))
    assert not any(cell.endswith(".0000") and cell.startswith(("1", "2", "3")) and len(cell) > 7 for cell in low.split())
    assert " 40 " in low + " "  # n_users as an integer
