"""Sweeps: the run grid, resumability, failures recorded not fatal, MDAC pairing, plots."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from rf2.cli import main
from rf2.evaluation import OVERALL, TierMetrics, mdac
from rf2.results import load_failures, load_results, mdac_table
from rf2.sweep import Sweep, SweepSpec, run_id

BASE = {"dataset": "synthetic", "dataset_options": {"n_users": 150, "n_items": 60, "events_per_user": 12, "seed": 4,
                                                   "click_rate": 0.35},
        "clients_per_round": 30}


def spec(**kw) -> SweepSpec:
    return SweepSpec(base=dict(BASE), **{"mappings": ("random", "dirichlet:0.05"),
                                         "optimizations": ("exclude-lo", "quants:1:2:8"), "seeds": (0,),
                                         "noise_floor": False, **kw})


def test_grid_has_one_shared_baseline_per_mapping_and_seed():
    s = spec(seeds=(0, 1))
    cfgs = s.configs()
    assert len(cfgs) == 2 * 3 * 2
    assert sum(c.optimization == "none" for c in cfgs) == 4
    assert SweepSpec(base=dict(BASE), optimizations=("paper-table1",)).optimization_list[:3] == ["none", "exclude-lo", "overselect:0.2"]
    assert len(SweepSpec(base=dict(BASE)).configs()) == 6 * 16  # the paper's sweep: 6 mappings x (14 + none + floor)
    assert len(SweepSpec(base=dict(BASE), noise_floor=False).configs()) == 6 * 15


def test_noise_floor_adds_one_retrained_none_per_mapping_and_seed():
    cfgs = spec(seeds=(0, 1), noise_floor=True).configs()
    floor = [c for c in cfgs if c.replicate]
    assert len(cfgs) == 2 * 3 * 2 + 4 and len(floor) == 4
    assert {(c.mapping, c.seed, c.optimization, c.replicate) for c in floor} == {
        (m, s, "none", 1) for m in ("random", "dirichlet:0.05") for s in (0, 1)}
    assert len({run_id(c) for c in cfgs}) == len(cfgs)  # the replicate has its own id
    with pytest.raises(ValueError, match="replicate is set by the sweep"):
        SweepSpec(base={**BASE, "replicate": 1})


@pytest.mark.parametrize("kw,match", [
    ({"mappings": ("dirichlet:0",)}, "alpha must be > 0"),
    ({"optimizations": ("quant:9:9",)}, "has 2 values .* 3 tiers"),  # a 2-tier spec in a 3-tier sweep
    ({"optimizations": ("zip",)}, "unknown optimization"),
    ({"base": {**BASE, "mapping": "random"}}, "sweep axes"),
    ({"base": {**BASE, "clients_per_round": -1}}, "clients_per_round"),
    ({"seeds": ()}, "at least one"),
])
def test_bad_sweeps_fail_before_running(kw, match):
    with pytest.raises(ValueError, match=match):
        SweepSpec(**{"base": dict(BASE), **kw})


def test_sweep_file_roundtrip_and_unknown_keys(tmp_path):
    s = spec()
    p = tmp_path / "s.toml"
    p.write_text(s.to_toml())
    assert SweepSpec.from_toml(p) == s
    p.write_text("[sweep]\nmapings = ['random']\n")
    with pytest.raises(ValueError, match="mapings"):
        SweepSpec.from_toml(p)


def test_resume_skips_finished_runs_and_equals_uninterrupted(tmp_path, monkeypatch):
    from rf2 import simulation

    full = Sweep(spec(), tmp_path / "full", progress=False, executor="inprocess").run()
    assert full.finished == 6 and not full.failed
    reference = load_results(tmp_path / "full")

    # interrupt the second sweep at its fourth run
    real_run = simulation.Simulation.run
    calls = {"n": 0}

    def flaky(self):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_run(self)

    monkeypatch.setattr(simulation.Simulation, "run", flaky)
    with pytest.raises(KeyboardInterrupt):
        Sweep(spec(), tmp_path / "resumed", progress=False, executor="inprocess").run()
    assert len(list((tmp_path / "resumed" / "runs").glob("*.csv"))) == 3  # nothing finished was lost
    assert not list((tmp_path / "resumed" / "runs").glob(".*tmp"))  # no half-written files
    monkeypatch.setattr(simulation.Simulation, "run", real_run)
    again = Sweep(spec(), tmp_path / "resumed", progress=False, executor="inprocess").run()
    assert (again.skipped, again.finished) == (3, 3)
    resumed = load_results(tmp_path / "resumed")
    key = ["mapping", "optimization", "tier", "metric"]
    a = reference.sort_values(key).reset_index(drop=True)
    b = resumed.sort_values(key).reset_index(drop=True)
    assert np.allclose(a["value"], b["value"], equal_nan=True)
    assert Sweep(spec(), tmp_path / "resumed", progress=False, executor="inprocess").run().finished == 0


def test_failed_runs_are_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from rf2 import simulation

    real_run = simulation.Simulation.run

    def diverge(self):
        if self.config.optimization == "quants:1:2:8" and self.config.mapping == "random":
            raise simulation.DivergenceError("round 3: training loss is nan")
        return real_run(self)

    monkeypatch.setattr(simulation.Simulation, "run", diverge)
    summary = Sweep(spec(), tmp_path, progress=False, executor="inprocess").run()
    assert summary.finished == 5 and len(summary.failed) == 1
    assert "nan" in summary.failed[0][1]
    fails = load_failures(tmp_path)
    assert fails.iloc[0]["optimization"] == "quants:1:2:8"
    table = mdac_table(load_results(tmp_path))
    assert len(table) == 3  # the failed run is absent, not a zero
    # plotting marks the missing run instead of drawing a zero bar
    assert main(["plot", str(tmp_path)]) == 0
    # fixed: the retry finds only the failed run to do
    monkeypatch.setattr(simulation.Simulation, "run", real_run)
    again = Sweep(spec(), tmp_path, progress=False, executor="inprocess").run()
    assert again.finished == 1 and not again.failed and len(load_failures(tmp_path)) == 0


def test_mdac_table_pairs_each_run_with_its_baseline(tmp_path):
    Sweep(spec(), tmp_path, progress=False, executor="inprocess").run()
    rows = load_results(tmp_path)
    table = mdac_table(rows)
    assert len(table) == 4
    for _, r in table.iterrows():
        def metrics(opt):
            f = rows[(rows["mapping"] == r["mapping"]) & (rows["optimization"] == opt) & (rows["metric"] == "auc")]
            return TierMetrics(f[["tier", "metric", "value", "n_events", "n_users"]].reset_index(drop=True), ("low", "mid", "high"))
        assert r["mdac"] == pytest.approx(mdac(metrics(r["optimization"]), metrics("none")))
    written = json.loads(next((tmp_path / "runs").glob("*.json")).read_text())
    assert written["config"]["dataset"] == "synthetic"
    assert set(pd.read_csv(tmp_path / "mdac.csv")["optimization"]) == {"exclude-lo", "quants:1:2:8"}


def test_run_ids_are_stable_and_distinct():
    cfgs = spec(seeds=(0, 1)).configs()
    ids = [run_id(c) for c in cfgs]
    assert len(set(ids)) == len(ids)
    assert ids == [run_id(c) for c in spec(seeds=(0, 1)).configs()]


def test_cli_sweep_and_plot(tmp_path, capsys):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(spec(noise_floor=True).to_toml())
    out = tmp_path / "res"
    assert main(["sweep", "--config", str(cfg), "--out", str(out), "--quiet", "--plot"]) == 0
    text = capsys.readouterr().out
    assert "MDAC of AUC (%)" in text and "exclude-lo" in text and "noise floor" in text
    assert re.search(r"exclude-lo\s+\d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\]", text)  # MDAC [lo, hi]
    for name in ("mdac_auc.png", "tier_change_auc.png", "tier_items.png"):
        assert (out / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    summary = pd.read_csv(out / "mdac_summary.csv")
    assert {"mdac_lo", "mdac_hi", "floor", "verdict"} <= set(summary.columns) and len(summary) == 4
    assert (summary["mdac_lo"] <= summary["mdac_hi"]).all() and (summary["mdac_lo"] >= 0).all()
    assert main(["sweep", "--config", str(cfg), "--out", str(out), "--quiet", "--seeds", "0", "1"]) == 0
    assert "= 16 runs; 8 already finished" in capsys.readouterr().out  # seed 0 reused, seed 1 added
    assert len(list((out / "runs").glob("*.csv"))) == 16
    assert len(list((out / "runs").glob("*.scores.npz"))) == 16


def test_a_sweep_with_other_settings_is_refused_and_added_axes_are_merged(tmp_path, capsys):
    out = tmp_path / "res"
    Sweep(spec(optimizations=("exclude-lo",)), out, progress=False, executor="inprocess").run()
    other = SweepSpec(base={**BASE, "epochs": 2}, mappings=("random",), optimizations=("exclude-lo",), seeds=(0,),
                      noise_floor=False)
    with pytest.raises(ValueError, match="other settings.*epochs 1 -> 2"):
        Sweep(other, out, progress=False, executor="inprocess").run()
    assert main(["sweep", "--out", str(out), "--quiet", "--epochs", "2"]) == 2  # one line, nothing run
    assert "other settings" in capsys.readouterr().err
    # more seeds with the same settings extend the directory, and sweep.toml lists both
    more = spec(optimizations=("exclude-lo",), seeds=(1,))
    Sweep(more, out, progress=False, executor="inprocess").run()
    held = SweepSpec.from_toml(out / "sweep.toml")
    assert held.seeds == (0, 1) and held.mappings == ("random", "dirichlet:0.05")
    # no --config: the directory's own sweep.toml is continued (nothing left to run)
    assert main(["sweep", "--out", str(out), "--quiet"]) == 0
    assert "continuing the sweep" in capsys.readouterr().out


def test_per_run_floor_is_reported_without_scores(tmp_path):
    """Without stored scores there are no intervals, but each run's noise floor (the MDAC of its
    mapping's retrained none) is still known and shown."""
    out = tmp_path / "res"
    Sweep(spec(mappings=("random",), optimizations=("exclude-lo",), noise_floor=True), out, progress=False,
          executor="inprocess").run()
    rows = load_results(out)
    table = mdac_table(rows)  # no scores given
    floor_rows = rows[(rows["replicate"] == 1) & (rows["metric"] == "auc")]
    assert len(table) == 1 and np.isfinite(table["floor"].iloc[0])
    assert table["verdict"].iloc[0] == "no scores" and np.isnan(table["mdac_lo"].iloc[0])
    with_scores = mdac_table(rows, scores=out)
    assert with_scores["floor"].iloc[0] == pytest.approx(table["floor"].iloc[0])
    assert len(floor_rows)


def test_rewriting_the_tables_without_scores_keeps_the_intervals_computed_before(tmp_path, capsys):
    """A fresh clone has the runs but not their (uncommitted) scores: rewriting the tables must not
    turn computed intervals into "no scores", and must not keep an interval for rows that changed."""
    from rf2.store import ResultsStore

    out = tmp_path / "res"
    Sweep(spec(mappings=("random",), optimizations=("exclude-lo",), noise_floor=True), out, progress=False,
          executor="inprocess").run()
    before = {n: pd.read_csv(out / n) for n in ("mdac.csv", "mdac_summary.csv")}
    assert (before["mdac_summary.csv"]["verdict"] != "no scores").all()
    assert before["mdac_summary.csv"]["mdac_lo"].notna().all() and before["mdac.csv"]["mdac_lo"].notna().all()
    for f in (out / "runs").glob("*.scores.npz"):
        f.unlink()
    st = ResultsStore(out)
    with st.lock():
        st.write_tables(n_boot=10)  # a different n_boot would change the intervals: they must be the old ones
    assert "keep the intervals computed earlier" in capsys.readouterr().err
    for n, old in before.items():
        pd.testing.assert_frame_equal(pd.read_csv(out / n), old)
    # the same cell with another point estimate (other runs) is not given the old interval
    s = pd.read_csv(out / "mdac_summary.csv")
    s.loc[0, "rc_overall"] += 0.01
    s.to_csv(out / "mdac_summary.csv", index=False)
    with st.lock():
        st.write_tables(n_boot=10)
    s = pd.read_csv(out / "mdac_summary.csv")
    assert s.loc[0, "verdict"] == "no scores" and np.isnan(s.loc[0, "mdac_lo"])
    assert s.loc[0, "rc_overall"] == pytest.approx(before["mdac_summary.csv"].loc[0, "rc_overall"])
    assert pd.read_csv(out / "mdac.csv")["mdac_lo"].notna().all()  # per run: keyed by run id, still kept
