"""rf2.results on small hand-made frames: pairing, per-run and per-cell tables against
rf2.evaluation.uncertainty called directly, the pivots, defaults and failures (mutation tests)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rf2 import results as R
from rf2.evaluation import uncertainty as U
from rf2.evaluation.scores import EvalScores

NAMES = ("low", "mid", "high")


def frame(runs, metric="auc"):
    """runs: (mapping, optimization, seed, replicate, run_id, {tier: value}) -> tidy rows."""
    out = []
    for mapping, opt, seed, rep, rid, vals in runs:
        for tier, v in vals.items():
            out.append(dict(tier=tier, metric=metric, value=v, n_events=10, n_users=5, mapping=mapping,
                            optimization=opt, seed=seed, replicate=rep, run_id=rid))
    return pd.DataFrame(out)


def tiers(low, mid, high, overall):
    return {"low": low, "mid": mid, "high": high, "overall": overall}


def scores(rng, n_users=45, shift=0.0):
    user_tier = np.arange(n_users) % 3
    user = np.repeat(np.arange(n_users), 8)
    label = (np.arange(user.size) % 3 == 0).astype(np.int8)
    s = label * (1 + shift * (user_tier[user] == 0)) + rng.normal(size=user.size)
    return EvalScores(user.astype(np.int32), user_tier[user].astype(np.int8), label, s.astype(np.float32), NAMES,
                      user_tier.astype(np.int8))


ROWS = frame([
    ("random", "none", 0, 0, "b0", tiers(0.80, 0.70, 0.60, 0.70)),
    ("random", "none", 1, 0, "b1", tiers(0.50, 0.50, 0.50, 0.50)),
    ("random", "opt", 1, 0, "o1", tiers(0.55, 0.50, 0.40, 0.48)),
    ("random", "opt", 0, 0, "o0", tiers(0.40, 0.70, 0.66, 0.60)),
    ("random", "none", 0, 1, "f0", tiers(0.88, 0.70, 0.60, 0.72)),
    ("random", "none", 1, 1, "f1", tiers(0.50, 0.40, 0.50, 0.48)),
    ("popular", "none", 0, 0, "p0", tiers(0.60, 0.60, 0.60, 0.60)),
    ("popular", "opt", 0, 0, "q0", tiers(0.30, 0.60, 0.60, 0.50)),
])


def test_per_run_changes_mdac_and_floor_without_scores():
    runs, cells = R.mdac_tables(ROWS)
    assert list(runs["run_id"]) == ["q0", "o0", "o1"]  # by mapping and seed, floor rows left out
    assert not {"kind", "replicate", "run_id_base"} & set(runs.columns)
    r = runs.set_index("run_id")
    assert r.loc["o0", "rc_low"] == pytest.approx(-0.5) and r.loc["o0", "rc_high"] == pytest.approx(0.1)
    assert r.loc["o0", "rc_mid"] == pytest.approx(0.0) and r.loc["o0", "rc_overall"] == pytest.approx(-1 / 7)
    assert r.loc["o0", "auc_low"] == pytest.approx(0.40) and r.loc["o0", "auc_overall"] == pytest.approx(0.60)
    assert r.loc["o0", "mdac"] == pytest.approx(0.6)
    assert r.loc["o1", "mdac"] == pytest.approx(0.3)
    assert r.loc["q0", "mdac"] == pytest.approx(0.5)
    # each run's floor is its mapping and seed's retrained none against none, known without scores:
    # seed 0: low (0.88 - 0.80) / 0.80 = 0.1, others 0 -> 0.1; seed 1: mid -0.2 -> 0.2; popular: no floor run
    assert r.loc["o0", "floor"] == pytest.approx(0.1) and r.loc["o1", "floor"] == pytest.approx(0.2)
    assert np.isnan(r.loc["q0", "floor"])
    assert (runs["verdict"] == U.NO_SCORES).all() and runs["p_within"].isna().all()
    assert runs["mdac_lo"].isna().all() and runs["mdac_hi"].isna().all()

    c = cells.set_index("mapping")
    assert list(cells["mapping"]) == ["popular", "random"] and (cells["optimization"] == "opt").all()
    assert c.loc["random", "n_seeds"] == 2 and c.loc["popular", "n_seeds"] == 1
    assert c.loc["random", "rc_low"] == pytest.approx((-0.5 + 0.1) / 2)
    assert c.loc["random", "rc_high"] == pytest.approx((0.1 - 0.2) / 2)
    assert c.loc["random", "mdac"] == pytest.approx(0.2)  # MDAC of the seed-mean changes (low -0.2, mid 0)
    assert c.loc["random", "mean_mdac"] == pytest.approx(0.45)
    assert c.loc["random", "floor"] != c.loc["random", "floor"]  # no scores: no combined floor
    for col in ("rc_low_lo", "rc_low_hi", "mdac_lo", "mdac_hi", "mean_mdac_lo", "mean_mdac_hi", "p_within"):
        assert cells[col].isna().all(), col
    assert (cells["verdict"] == U.NO_SCORES).all()


def test_missing_baseline_tier_gives_no_mdac_not_zero():
    rows = frame([("random", "none", 0, 0, "b", {"low": 0.5, "mid": 0.5, "overall": 0.5}),
                  ("random", "opt", 0, 0, "o", tiers(0.5, 0.5, 0.5, 0.5))])
    runs, cells = R.mdac_tables(rows)
    assert np.isnan(runs.loc[0, "mdac"])
    assert np.isnan(cells.loc[0, "mdac"])
    rows = frame([("random", "opt", 0, 0, "o", tiers(0.5, 0.5, 0.5, 0.5))])  # no baseline at all
    runs, _ = R.mdac_tables(rows)
    assert np.isnan(runs.loc[0, "mdac"]) and np.isnan(runs.loc[0, "rc_overall"])


def test_pairs_without_replicate_or_run_id_columns_and_other_tiers():
    rows = frame([("m", "none", 0, 0, "b", {"t1": 0.5, "t0": 0.4, "overall": 0.5}),
                  ("m", "opt", 0, 0, "o", {"t1": 0.25, "t0": 0.4, "overall": 0.4})]).drop(columns=["replicate", "run_id"])
    merged, keys, order = R._pairs(rows, "auc")
    assert order == ["t0", "t1"] and keys == ["mapping", "seed"]
    runs, _ = R.mdac_tables(rows)
    assert runs.loc[0, "mdac"] == pytest.approx(0.5) and runs.loc[0, "run_id"] == ""
    assert R.mdac_tables(rows, metric="ndcg")[0].empty  # another metric: nothing
    assert R.noise_floor_table(rows, metric="ndcg").empty
    assert R.noise_floor_table(rows).empty  # no floor replicates


def test_bootstrap_columns_equal_the_cell_estimate_called_directly():
    rng = np.random.default_rng(3)
    sc = {rid: scores(rng, shift=(1.0 if rid.startswith("o") else 0.0)) for rid in ("b0", "b1", "o0", "o1", "f0", "f1")}
    rows = ROWS[ROWS["mapping"] == "random"]
    runs, cells = R.mdac_tables(rows, scores=sc, n_boot=50, level=0.9, boot_seed=4)
    est = U.cell_estimate([(sc["o0"], sc["b0"]), (sc["o1"], sc["b1"])], "auc", 50, 0.9, 4, keys=["b0", "b1"])
    fest = U.cell_estimate([(sc["f0"], sc["b0"]), (sc["f1"], sc["b1"])], "auc", 50, 0.9, 4, keys=["b0", "b1"])
    r = runs.set_index("run_id")
    assert r.loc["o0", "floor"] == pytest.approx(0.1) and r.loc["o1", "floor"] == pytest.approx(0.2)  # own seed's floor
    for j, rid in enumerate(("o0", "o1")):
        assert r.loc[rid, "mdac_lo"] == pytest.approx(est.seed_mdac_lo[j])
        assert r.loc[rid, "mdac_hi"] == pytest.approx(est.seed_mdac_hi[j])
        v, p = U.floor_test(est.seed_mdac_reps[j], fest.seed_mdac_reps[j], 0.9)
        assert r.loc[rid, "verdict"] == v and r.loc[rid, "p_within"] == pytest.approx(p)
    c = cells.iloc[0]
    assert c["n_seeds"] == 2
    assert c["mdac"] == pytest.approx(est.mdac) and c["mdac_lo"] == pytest.approx(est.mdac_lo)
    assert c["mdac_hi"] == pytest.approx(est.mdac_hi) and c["mean_mdac"] == pytest.approx(est.mean_mdac)
    assert c["mean_mdac_lo"] == pytest.approx(est.mean_mdac_lo) and c["mean_mdac_hi"] == pytest.approx(est.mean_mdac_hi)
    for j, t in enumerate(("low", "mid", "high", "overall")):
        assert c[f"rc_{t}"] == pytest.approx(est.rc[j])
        assert c[f"rc_{t}_lo"] == pytest.approx(est.rc_lo[j]) and c[f"rc_{t}_hi"] == pytest.approx(est.rc_hi[j])
    assert c["floor"] == pytest.approx(fest.mdac) and c["floor_hi"] == pytest.approx(fest.mdac_hi)
    v, p = U.floor_test(est.mdac_reps, fest.mdac_reps, 0.9)
    assert c["verdict"] == v and c["p_within"] == pytest.approx(p)

    table = R.mdac_table(rows, scores=sc, n_boot=50, level=0.9, boot_seed=4, summary=True)
    pd.testing.assert_frame_equal(table, cells)
    pd.testing.assert_frame_equal(R.mdac_table(rows, scores=sc, n_boot=50, level=0.9, boot_seed=4), runs)
    pd.testing.assert_frame_equal(R.mdac_tables(rows, scores=sc.get, n_boot=50, level=0.9, boot_seed=4)[1], cells)

    floor = R.noise_floor_table(rows, scores=sc, n_boot=50, level=0.9, boot_seed=4)
    assert len(floor) == 1 and floor.loc[0, "mapping"] == "random" and floor.loc[0, "n_seeds"] == 2
    for k in ("mdac", "mdac_lo", "mdac_hi", "mean_mdac", "mean_mdac_lo", "mean_mdac_hi"):
        assert floor.loc[0, k] == pytest.approx(getattr(fest, k)), k

    # one seed's scores missing: point estimates only, and no floor for the cell
    part = {k: v for k, v in sc.items() if k not in ("o1", "f1")}
    runs2, cells2 = R.mdac_tables(rows, scores=part, n_boot=50, level=0.9, boot_seed=4)
    c2 = cells2.iloc[0]
    assert c2["verdict"] == U.NO_SCORES and np.isnan(c2["mdac_lo"]) and np.isnan(c2["p_within"])
    assert c2["mdac"] == pytest.approx(0.2)
    r2 = runs2.set_index("run_id")
    assert r2.loc["o1", "verdict"] == U.NO_SCORES and np.isnan(r2.loc["o1", "mdac_lo"])
    assert r2.loc["o0", "verdict"] in (U.ABOVE, U.WITHIN) and np.isfinite(r2.loc["o0", "mdac_lo"])
    nf = R.noise_floor_table(rows, scores=part, n_boot=50)
    assert np.isnan(nf.loc[0, "mdac"]) and nf.loc[0, "mean_mdac"] == pytest.approx(0.15)
    for k in ("mdac_lo", "mdac_hi", "mean_mdac_lo", "mean_mdac_hi"):
        assert np.isnan(nf.loc[0, k]), k

    # floor scores missing altogether: the cell is bootstrapped but has no floor to compare with
    nofloor = {k: v for k, v in sc.items() if not k.startswith("f")}
    _, cells3 = R.mdac_tables(rows, scores=nofloor, n_boot=50, level=0.9, boot_seed=4)
    assert cells3.iloc[0]["verdict"] == U.NO_FLOOR and np.isnan(cells3.iloc[0]["p_within"])
    assert np.isnan(cells3.iloc[0]["floor"]) and cells3.iloc[0]["mdac"] == pytest.approx(est.mdac)


def test_scores_loader_kinds():
    assert R._scores_loader(None)("x") is None
    assert R._scores_loader({"a": 1})("a") == 1 and R._scores_loader({"a": 1})("b") is None
    f = lambda rid: rid * 2  # noqa: E731
    assert R._scores_loader(f) is f


def test_mdac_pivot_order_and_percent():
    t = pd.DataFrame({"mapping": ["a", "b", "a", "b", "a"], "optimization": ["x", "x", "y", "y", "x"],
                      "mdac": [0.01, 0.02, 0.03, 0.04, 0.03]})
    p = R.mdac_pivot(t, mappings=["b", "a", "c"], optimizations=["y", "z", "x"])
    assert list(p.index) == ["y", "x"] and list(p.columns) == ["b", "a"]
    assert p.loc["x", "a"] == pytest.approx(2.0) and p.loc["y", "b"] == pytest.approx(4.0)
    assert list(R.mdac_pivot(t).index) == ["x", "y"]
    assert R.mdac_pivot(pd.DataFrame()).empty


def test_summary_pivot_cells_floor_row_and_metric():
    s = pd.DataFrame({
        "metric": ["ndcg", "auc", "auc", "auc", "auc"],
        "mapping": ["a", "a", "b", "a", "b"],
        "optimization": ["x", "x", "x", "y", "y"],
        "mdac": [0.9, 0.0123, 0.05, np.nan, 0.1],
        "mdac_lo": [0.1, 0.01, np.nan, 0.0, 0.05],
        "mdac_hi": [0.95, 0.02, np.nan, 0.0, 0.15],
        "verdict": ["above floor", "above floor", "no scores", "within noise", "within noise"],
        "floor": [0.5, 0.0123, np.nan, 0.0123, np.nan],
    })
    t = R.summary_pivot(s, mappings=["b", "a"], optimizations=["y", "x"], metric="auc")
    assert list(t.index) == ["y", "x", "noise floor"] and list(t.columns) == ["b", "a"]
    assert t.loc["x", "a"] == "1.23 [1.00, 2.00] *"
    assert t.loc["x", "b"] == "5.00"
    assert t.loc["y", "a"] == "-"
    assert t.loc["y", "b"] == "10.00 [5.00, 15.00]"
    assert list(t.loc["noise floor"]) == ["-", "1.23"]
    assert R.summary_pivot(pd.DataFrame()).empty
    assert R.summary_pivot(s.drop(columns=["mdac_lo"]), metric="auc").loc["x", "a"] == "1.23"  # no interval column
    t2 = R.summary_pivot(s.drop(columns=["floor"]).iloc[1:])
    assert list(t2.index) == ["x", "y"] and "noise floor" not in t2.index
    t3 = R.summary_pivot(s.iloc[1:3].assign(optimization=["x", "z"]))
    assert t3.loc["z", "a"] == "-" and t3.loc["x", "b"] == "-"  # empty cells


def test_with_config_defaults_fills_missing_and_nan():
    rows = pd.DataFrame({"mapping": ["a", "b"], "epochs": [3, np.nan], "tier": ["low", "low"]})
    out = R.with_config_defaults(rows)
    assert list(out["epochs"]) == [3, 1] and list(out["mapping"]) == ["a", "b"]
    assert (out["model"] == "dlrm").all() and (out["n_tiers"] == 3).all()
    assert "dataset_options" not in out.columns and "system_options" not in out.columns


def test_load_failures_and_results_paths(tmp_path, capsys):
    (tmp_path / "none" / "runs").mkdir(parents=True)
    empty = R.load_failures(tmp_path / "none")
    assert empty.empty and list(empty.columns) == ["mapping", "optimization", "seed", "error"]
    with pytest.raises(FileNotFoundError, match="no runs/ folder"):
        R.load_results(tmp_path)
    ROWS.to_csv(tmp_path / "one.csv", index=False)
    pd.testing.assert_frame_equal(R.load_results(tmp_path / "one.csv"), pd.read_csv(tmp_path / "one.csv"))
    runs = tmp_path / "res" / "runs"
    runs.mkdir(parents=True)
    (runs / "a.failed.json").write_text(json.dumps(
        {"config": {"mapping": "m", "optimization": "o", "seed": 2, "epochs": 9}, "error": "boom"}), encoding="utf-8")
    (runs / "b.failed.json").write_text("{not json", encoding="utf-8")
    f = R.load_failures(tmp_path / "res")
    err = capsys.readouterr().err
    assert "b.failed.json is damaged (JSONDecodeError: " in err and "; left out of the failures" in err
    assert list(f.columns) == ["mapping", "optimization", "seed", "error"]
    assert f.to_dict("records") == [{"mapping": "m", "optimization": "o", "seed": 2, "error": "boom"}]


def test_defaults_and_cells_in_order_of_appearance():
    """Two cells differing in a setting listed after the seed: cells keep the order of their first
    seed, one seed each; the default n_boot / level / boot_seed are those of cell_estimate's call."""
    rows = frame([
        ("random", "none", 0, 0, "b0", tiers(0.80, 0.70, 0.60, 0.70)),
        ("random", "none", 1, 0, "b1", tiers(0.50, 0.50, 0.50, 0.50)),
        ("random", "opt", 0, 0, "o0", tiers(0.40, 0.70, 0.66, 0.60)),
        ("random", "opt", 1, 0, "o1", tiers(0.55, 0.50, 0.40, 0.48)),
        ("random", "none", 0, 1, "f0", tiers(0.88, 0.70, 0.60, 0.72)),
        ("random", "none", 1, 1, "f1", tiers(0.50, 0.40, 0.50, 0.48)),
    ])
    rows["clients_per_round"] = rows["run_id"].str[1].map({"0": 64, "1": 32})
    nf = R.noise_floor_table(rows)
    assert list(nf["clients_per_round"]) == [64, 32] and list(nf["n_seeds"]) == [1, 1]
    assert list(nf["mean_mdac"]) == pytest.approx([0.1, 0.2])
    rng = np.random.default_rng(5)
    sc = {rid: scores(rng, n_users=30, shift=(1.0 if rid.startswith("o") else 0.0))
          for rid in ("b0", "b1", "o0", "o1", "f0", "f1")}
    est = U.cell_estimate([(sc["o0"], sc["b0"])], "auc", 1000, 0.95, 0, keys=["b0"])
    fest = U.cell_estimate([(sc["f0"], sc["b0"])], "auc", 1000, 0.95, 0, keys=["b0"])
    nf = R.noise_floor_table(rows, scores=sc)
    assert nf.loc[0, "mdac_lo"] == pytest.approx(fest.mdac_lo) and nf.loc[0, "mdac_hi"] == pytest.approx(fest.mdac_hi)
    runs, cells = R.mdac_tables(rows, scores=sc)
    assert list(cells["clients_per_round"]) == [64, 32]
    assert cells.loc[0, "mdac_lo"] == pytest.approx(est.mdac_lo) and cells.loc[0, "mdac_hi"] == pytest.approx(est.mdac_hi)
    assert cells.loc[0, "verdict"] == U.floor_test(est.mdac_reps, fest.mdac_reps, 0.95)[0]
    pd.testing.assert_frame_equal(R.mdac_table(rows, scores=sc), runs)
    pd.testing.assert_frame_equal(R.mdac_table(rows, scores=sc, summary=True), cells)


def test_a_duplicated_row_counts_once_first_value_wins():
    rows = frame([("m", "none", 0, 0, "b", tiers(0.5, 0.5, 0.5, 0.5)),
                  ("m", "opt", 0, 0, "o", tiers(0.25, 0.5, 0.5, 0.5))])
    dup = pd.concat([rows, rows.iloc[[4]].assign(value=0.75)], ignore_index=True)  # o's low again, another value
    assert R.mdac_tables(dup)[0].loc[0, "mdac"] == pytest.approx(0.5)


def test_load_results_of_a_directory_without_finished_runs_has_every_column(tmp_path):
    from rf2.config import RunConfig
    from rf2.store import ResultsStore

    with ResultsStore(tmp_path).lock():
        pass  # a results directory with runs/ and its marker, but no finished run
    rows = R.load_results(tmp_path)
    assert len(rows) == 0
    assert list(rows.columns) == ["tier", "metric", "value", "n_events", "n_users", *RunConfig.__dataclass_fields__,
                                  "run_id"]


def test_load_results_numbers_the_rows_of_all_runs_from_zero(tmp_path):
    from rf2.config import RunConfig
    from rf2.store import ResultsStore

    st = ResultsStore(tmp_path)
    with st.lock():
        for rid, opt in (("a", "none"), ("b", "exclude-lo")):
            cfg = RunConfig(dataset="synthetic", optimization=opt).to_dict()
            rows = frame([("random", opt, 0, 0, rid, tiers(0.6, 0.7, 0.8, 0.7))])
            for k, v in cfg.items():
                rows[k] = str(v) if isinstance(v, dict) else v
            st.commit_run(rid, rows.drop(columns="run_id").to_csv(index=False), {"config": cfg})
    rows = R.load_results(tmp_path)
    assert list(rows.index) == list(range(8))  # one index over both runs' four rows, not 0-3 twice
    assert list(rows["run_id"]) == ["a"] * 4 + ["b"] * 4
