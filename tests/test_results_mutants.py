"""rf2.results: behaviours the mutation run at 20aa8b1 found untested (issue 17; see
benchmarks/MUTATION.md). Small hand-made frames with hand-computed MDACs, and tables compared with
rf2.evaluation.uncertainty called directly."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rf2 import results as R
from rf2.evaluation import uncertainty as U
from test_results_edges import frame, scores  # the shared frame/score builders


def tiers(low, mid, high, overall=None):
    t = {"low": low, "mid": mid, "high": high}
    if overall is not None:
        t["overall"] = overall
    return t


# seed 0: o0 changes low by -0.5, high by +0.1 (MDAC 0.6); its floor f0 changes low by +0.1 (0.1)
# seed 1: o1 changes low +0.1, high -0.2 (0.3); its floor f1 changes mid by -0.2 (0.2)
B0, B1 = tiers(0.80, 0.70, 0.60, 0.70), tiers(0.50, 0.50, 0.50, 0.50)
O0, O1 = tiers(0.40, 0.70, 0.66, 0.60), tiers(0.55, 0.50, 0.40, 0.48)
F0, F1 = tiers(0.88, 0.70, 0.60, 0.72), tiers(0.50, 0.40, 0.50, 0.48)
RUN_COLUMNS = ["mapping", "seed", "optimization", "run_id",
               "auc_low", "rc_low", "auc_mid", "rc_mid", "auc_high", "rc_high", "auc_overall", "rc_overall",
               "mdac", "mdac_lo", "mdac_hi", "floor", "verdict", "p_within"]
FLOATS = ("mdac", "mdac_lo", "mdac_hi", "floor", "p_within")


def test_per_run_table_has_exactly_its_columns_a_fresh_index_and_float_columns():
    rows = frame([("random", "none", 0, 0, "b0", B0), ("random", "none", 1, 0, "b1", B1),
                  ("random", "opt", 0, 0, "o0", O0), ("random", "opt", 1, 0, "o1", O1),
                  ("random", "none", 0, 1, "f0", F0), ("random", "none", 1, 1, "f1", F1)])
    runs, cells = R.mdac_tables(rows)
    assert list(runs.columns) == RUN_COLUMNS
    assert list(runs.index) == [0, 1] and list(runs["run_id"]) == ["o0", "o1"]
    for c in FLOATS:
        assert runs[c].dtype == np.float64, c
    assert list(runs["floor"]) == pytest.approx([0.1, 0.2])
    # the summary without scores: intervals, floor and p_within are float NaN columns, not None
    for c in ("mdac_lo", "mdac_hi", "mean_mdac_lo", "mean_mdac_hi", "rc_low_lo", "rc_overall_hi", "floor", "floor_hi",
              "p_within"):
        assert cells[c].dtype == np.float64 and cells[c].isna().all(), c

    rng = np.random.default_rng(3)
    sc = {rid: scores(rng, shift=(1.0 if rid.startswith("o") else 0.0)) for rid in ("b0", "b1", "o0", "o1", "f0", "f1")}
    runs, _ = R.mdac_tables(rows, scores=sc, n_boot=20)
    assert list(runs.columns) == RUN_COLUMNS
    for c in FLOATS:
        assert runs[c].dtype == np.float64, c
    assert np.isfinite(runs["mdac_lo"]).all() and np.isfinite(runs["p_within"]).all()


def test_a_floor_cell_met_before_any_run_cell_does_not_end_the_loops():
    """The floor replicate at seed 0 comes first after sorting by seed (the run exists only at
    seed 1): the run still gets its own seed's floor and the summary still has its cell."""
    rows = frame([("random", "none", 0, 0, "b0", B0), ("random", "none", 1, 0, "b1", B1),
                  ("random", "opt", 1, 0, "o1", O1),
                  ("random", "none", 0, 1, "f0", F0), ("random", "none", 1, 1, "f1", F1)])
    runs, cells = R.mdac_tables(rows)
    assert list(runs["run_id"]) == ["o1"]
    assert runs.loc[0, "mdac"] == pytest.approx(0.3) and runs.loc[0, "floor"] == pytest.approx(0.2)
    assert len(cells) == 1 and cells.loc[0, "optimization"] == "opt" and cells.loc[0, "n_seeds"] == 1
    assert cells.loc[0, "mdac"] == pytest.approx(0.3) and cells.loc[0, "mean_mdac"] == pytest.approx(0.3)


def test_scores_that_cannot_be_paired_and_runs_without_a_floor():
    """Mapping a: scores pair up but there is no floor run (verdict "no floor"); mapping b: the
    run's scores are of another test set, the bootstrap refuses them (point estimates only)."""
    rows = frame([("a", "none", 0, 0, "ba", B0), ("a", "opt", 0, 0, "oa", O0),
                  ("b", "none", 0, 0, "bb", B0), ("b", "opt", 0, 0, "ob", O0)])
    rng = np.random.default_rng(7)
    sc = {"ba": scores(rng), "oa": scores(rng, shift=1.0), "bb": scores(rng), "ob": scores(rng, n_users=30)}
    with pytest.raises(ValueError, match="share test events"):
        U.cell_estimate([(sc["ob"], sc["bb"])], "auc", 20)
    runs, cells = R.mdac_tables(rows, scores=sc, n_boot=20, boot_seed=1)
    r, c = runs.set_index("run_id"), cells.set_index("mapping")
    est = U.cell_estimate([(sc["oa"], sc["ba"])], "auc", 20, 0.95, 1, keys=["ba"])
    assert r.loc["oa", "verdict"] == U.NO_FLOOR and np.isnan(r.loc["oa", "p_within"]) and np.isnan(r.loc["oa", "floor"])
    assert r.loc["oa", "mdac_lo"] == pytest.approx(est.seed_mdac_lo[0])
    assert c.loc["a", "verdict"] == U.NO_FLOOR and c.loc["a", "mdac_lo"] == pytest.approx(est.mdac_lo)
    assert r.loc["ob", "verdict"] == U.NO_SCORES and np.isnan(r.loc["ob", "mdac_lo"])
    assert r.loc["ob", "mdac"] == pytest.approx(0.6)
    assert c.loc["b", "verdict"] == U.NO_SCORES and c.loc["b", "mdac"] == pytest.approx(0.6)
    assert np.isnan(c.loc["b", "mdac_lo"]) and np.isnan(c.loc["b", "p_within"])


def test_the_verdicts_use_the_given_level():
    rows = frame([("random", "none", 0, 0, "b0", B0), ("random", "opt", 0, 0, "o0", O0),
                  ("random", "none", 0, 1, "f0", F0)])
    rng = np.random.default_rng(1)
    sc = {"b0": scores(rng), "f0": scores(rng), "o0": scores(rng, shift=0.3)}
    est = U.cell_estimate([(sc["o0"], sc["b0"])], "auc", 50, 0.5, 4, keys=["b0"])
    fest = U.cell_estimate([(sc["f0"], sc["b0"])], "auc", 50, 0.5, 4, keys=["b0"])
    # the difference is above 0 in its 25 % quantile but not in its 2.5 % quantile
    assert U.floor_test(est.mdac_reps, fest.mdac_reps, 0.5)[0] == U.ABOVE
    assert U.floor_test(est.mdac_reps, fest.mdac_reps, 0.95)[0] == U.WITHIN
    assert U.floor_test(est.seed_mdac_reps[0], fest.seed_mdac_reps[0], 0.5)[0] == U.ABOVE
    assert U.floor_test(est.seed_mdac_reps[0], fest.seed_mdac_reps[0], 0.95)[0] == U.WITHIN
    runs, cells = R.mdac_tables(rows, scores=sc, n_boot=50, level=0.5, boot_seed=4)
    assert runs.loc[0, "verdict"] == U.ABOVE and cells.loc[0, "verdict"] == U.ABOVE
    assert cells.loc[0, "p_within"] == pytest.approx(U.floor_test(est.mdac_reps, fest.mdac_reps, 0.5)[1])


def test_rows_without_an_overall_tier():
    rows = frame([("random", "none", 0, 0, "b0", tiers(0.8, 0.7, 0.6)), ("random", "opt", 0, 0, "o0", tiers(0.4, 0.7, 0.66))])
    runs, cells = R.mdac_tables(rows)
    assert runs.loc[0, "mdac"] == pytest.approx(0.6) and runs.loc[0, "rc_low"] == pytest.approx(-0.5)
    assert np.isnan(runs.loc[0, "auc_overall"]) and np.isnan(runs.loc[0, "rc_overall"])
    assert cells.loc[0, "mdac"] == pytest.approx(0.6) and np.isnan(cells.loc[0, "rc_overall"])


def test_summary_cells_in_order_of_first_appearance_after_a_stable_sort_by_seed():
    """Nine cells (mapping x optimisation) at two seeds: the summary lists them as the rows of seed
    0 come, i.e. by mapping and then optimisation; an unstable sort would shuffle the ties."""
    runs = []
    for m in ("a", "b", "c"):
        for s, (b, o) in enumerate(((B0, O0), (B1, O1))):
            runs.append((m, "none", s, 0, f"b{m}{s}", b))
            runs += [(m, opt, s, 0, f"{opt}{m}{s}", o) for opt in ("x", "y", "z")]
    _, cells = R.mdac_tables(frame(runs))
    assert list(zip(cells["mapping"], cells["optimization"])) == [(m, o) for m in "abc" for o in "xyz"]
    assert (cells["n_seeds"] == 2).all() and list(cells["mean_mdac"]) == pytest.approx([0.45] * 9)


def _commit(st, rid, rows, sc=None):
    from rf2.config import RunConfig

    cfg = RunConfig(dataset="synthetic").to_dict()
    st.commit_run(rid, rows[rows["run_id"] == rid].drop(columns="run_id").to_csv(index=False), {"config": cfg},
                  scores=sc.to_bytes() if sc is not None else b"")


def test_scores_read_from_a_results_directory_equal_the_same_scores_given_as_a_mapping(tmp_path):
    """Also: a run without a baseline gets no interval even when a run is named ``nan`` (the text
    of a missing baseline id)."""
    from rf2.store import ResultsStore

    rows = frame([("random", "none", 0, 0, "b0", B0), ("random", "opt", 0, 0, "o0", O0),
                  ("random", "none", 0, 1, "f0", F0), ("lonely", "opt", 0, 0, "l0", O0),
                  ("other", "none", 0, 0, "nan", B0)])
    rng = np.random.default_rng(11)
    sc = {"b0": scores(rng), "o0": scores(rng, shift=1.0), "f0": scores(rng), "l0": scores(rng, shift=1.0),
          "nan": scores(rng)}
    st = ResultsStore(tmp_path)
    with st.lock():
        for rid in sc:
            _commit(st, rid, rows, sc[rid])
    loaded = R.load_results(tmp_path)
    runs, cells = R.mdac_tables(loaded, scores=tmp_path, n_boot=20)
    runs2, cells2 = R.mdac_tables(loaded, scores=sc, n_boot=20)
    pd.testing.assert_frame_equal(runs, runs2)
    pd.testing.assert_frame_equal(cells, cells2)
    r = runs.set_index("run_id")
    assert np.isfinite(r.loc["o0", "mdac_lo"]) and r.loc["o0", "verdict"] in (U.ABOVE, U.WITHIN)
    assert np.isnan(r.loc["l0", "mdac"]) and np.isnan(r.loc["l0", "mdac_lo"]) and r.loc["l0", "verdict"] == U.NO_SCORES


def test_summary_pivot_noise_floor_row_shows_the_floor_bound_where_known():
    s = pd.DataFrame({"mapping": ["a", "b", "c"], "optimization": ["x", "x", "x"], "mdac": [0.05, 0.1, 0.2],
                      "mdac_lo": [0.01, 0.02, 0.03], "mdac_hi": [0.09, 0.2, 0.3], "verdict": ["within noise"] * 3,
                      "floor": [0.0123, 0.02, np.nan], "floor_hi": [0.025, np.nan, 0.5]})
    t = R.summary_pivot(s)
    assert list(t.loc["noise floor"]) == ["1.23 (<= 2.50)", "2.00", "-"]
    assert t.loc["x", "a"] == "5.00 [1.00, 9.00]"
