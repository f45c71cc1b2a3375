"""One damaged file never blocks a results directory: it is named in a warning and treated as not
done (the next sweep recomputes it); stray temporary files of an interrupted commit are removed."""
from __future__ import annotations

import json

import pytest

from rf2.cli import main
from rf2.results import load_failures, load_results
from rf2.store import ResultsStore


@pytest.fixture
def results(tmp_path, tiny_sweep):
    out = tmp_path / "res"
    assert tiny_sweep(out).run().finished == 2
    return out


def test_a_non_utf8_run_record_is_named_and_rerun(results, capsys, tiny_sweep):
    rid = sorted(ResultsStore(results).finished())[0]
    rec = results / "runs" / f"{rid}.json"
    rec.write_bytes(rec.read_bytes().replace(b"{", b"{\xff", 1))
    assert rid not in ResultsStore(results).finished()
    assert rec.name in capsys.readouterr().err
    assert len(load_results(results)["run_id"].unique()) == 1
    assert main(["plot", str(results)]) == 0
    again = tiny_sweep(results).run()
    assert again.finished == 1 and rid in ResultsStore(results).finished()


def test_a_damaged_tier_summary_does_not_block_resume(results, capsys, tiny_sweep):
    rid = sorted(ResultsStore(results).finished())[0]
    (results / "runs" / f"{rid}.json").unlink()
    (results / "tiers" / "summary.csv").write_bytes(b"\xff\xfe\x00garbage\n\"unclosed\n")
    assert tiny_sweep(results).run().finished == 1
    assert "summary.csv" in capsys.readouterr().err


def test_a_damaged_failure_record_is_named_not_fatal(results, capsys):
    (results / "runs" / "x__none__seed0__0123456789.failed.json").write_bytes(b'{"config": \xff')
    assert len(load_failures(results)) == 0
    assert "x__none__seed0__0123456789.failed.json" in capsys.readouterr().err
    assert main(["plot", str(results)]) == 0


def test_stray_temporary_files_are_removed_at_the_next_sweep(results, tiny_sweep):
    strays = [results / "runs" / ".abc.csv.4242.tmp", results / ".results.csv.x1y2.tmp", results / "tiers" / ".s.csv.9.tmp"]
    for p in strays:
        p.write_text("torn")
    tiny_sweep(results).run()
    assert not any(p.exists() for p in strays)
    assert json.loads((results / "rf2-results.json").read_text())["format"] >= 3
