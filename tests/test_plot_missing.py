"""`rf2 plot` on a partial sweep names the planned runs that are missing; on a file it is a
one-line error."""
from __future__ import annotations

from rf2.cli import main
from rf2.store import ResultsStore
from rf2.sweep import Sweep, SweepSpec

BASE = {"dataset": "synthetic", "dataset_options": {"n_users": 120, "n_items": 50, "events_per_user": 10, "seed": 2},
        "clients_per_round": 30}


def test_plot_names_missing_runs_and_refuses_a_file(tmp_path, capsys):
    out = tmp_path / "res"
    spec = SweepSpec(base=dict(BASE), mappings=("random",), optimizations=("exclude-lo",), seeds=(0,), noise_floor=False)
    Sweep(spec, out, progress=False, executor="inprocess").run()
    rid = sorted(r for r in ResultsStore(out).finished() if "exclude-lo" in r)[0]
    (out / "runs" / f"{rid}.json").unlink()
    capsys.readouterr()
    assert main(["plot", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 of 2 planned run(s) missing" in text and "exclude-lo" in text
    assert main(["plot", str(out / "results.csv")]) == 2
    err = capsys.readouterr().err
    assert "results directory" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
