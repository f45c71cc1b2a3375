"""Exclude Lo, Overselect and the system cost model."""
from __future__ import annotations

import numpy as np
import pytest

from optimizations import ClientContext, Overselect, parse_optimization
from rf2.config import RunConfig
from rf2.seeding import numpy_rng
from rf2.simulation import Simulation
from rf2.system import DEFAULT_PROFILES, SystemModel

SMALL = dict(dataset="synthetic", dataset_options={"n_users": 300, "n_items": 120, "events_per_user": 15, "seed": 2},
             clients_per_round=25)


def ctx(cid, tier, n=10, seed=None):
    return ClientContext(cid, tier, ("low", "mid", "high")[tier], 0, 0, n, cid if seed is None else seed)


def test_exclude_lo_never_trains_low_tier_but_evaluates_it():
    res = Simulation(RunConfig(**SMALL, optimization="exclude-lo", mapping="dirichlet:0.1"), progress=False).run()
    bt = res.metrics.by_tier
    assert bt.loc["low", "participations"] == 0 and bt.loc["low", "upload_mb"] == 0
    assert bt.loc["mid", "participations"] > 0 and bt.loc["high", "participations"] > 0
    assert np.isfinite(bt.loc["low", "auc"])
    # every round still has K participants (the last takes the rest)
    assert (res.rounds["participants"][:-1] == 25).all()


def test_exclude_lo_on_a_population_of_only_low_devices_is_a_clear_error():
    from tier_mapping import TierAssignment
    from rf2.data import load_dataset

    ds = load_dataset("synthetic", **SMALL["dataset_options"])
    tiers = TierAssignment(np.zeros(ds.n_users, dtype=np.int8), 3, "all-low", 0)
    with pytest.raises(ValueError, match="leaves no client to train"):
        Simulation(RunConfig(**SMALL, optimization="exclude-lo"), dataset=ds, tiers=tiers, progress=False).run()


def test_overselect_drops_the_slowest():
    opt = Overselect("overselect:0.2", 0.2)
    assert opt.selection_size(10) == 12 and opt.selection_size(16) == 20
    cands = [ctx(i, i % 3) for i in range(12)]
    times = np.array([5, 1, 9, 2, 8, 3, 7, 4, 6, 10, 0.5, 11.0])
    kept = opt.participants(cands, lambda cs: times[[c.client_id for c in cs]])
    assert len(kept) == 10
    assert {c.client_id for c in kept} == set(range(12)) - {9, 11}


def test_overselect_in_a_run_drops_mostly_low_tier():
    res = Simulation(RunConfig(**SMALL, optimization="overselect:0.2"), progress=False).run()
    bt = res.metrics.by_tier
    assert bt["dropped"].sum() > 0
    assert bt.loc["low", "dropped"] > bt.loc["high", "dropped"]
    assert (res.rounds["selected"][:-1] == 30).all() and (res.rounds["participants"][:-1] == 25).all()


def test_costs_by_hand():
    sm = SystemModel(("low", "mid", "high"))
    cs = [ctx(1, 0, n=20, seed=111), ctx(2, 2, n=5, seed=222)]
    costs = sm.costs(cs, np.array([8e6, 8e6]), local_steps=2, compute_fraction=np.array([0.5, 1.0]))
    for i, c in enumerate(cs):
        prof = DEFAULT_PROFILES[c.tier_name]
        t = max(numpy_rng(c.seed, "system").normal(prof.ms_per_sample, prof.ms_per_sample_std), 0.1 * prof.ms_per_sample)
        frac = (0.5, 1.0)[i]
        assert costs.compute_s[i] == pytest.approx(c.num_samples * 2 * t * frac / 1000)
        assert costs.upload_s[i] == pytest.approx(8e6 / (prof.upload_mbps * 1e6))
    assert costs.upload_s[0] == pytest.approx(100 * costs.upload_s[1])  # two orders of magnitude


def test_low_tier_is_slower_on_average():
    sm = SystemModel(("low", "mid", "high"))
    low = sm.costs([ctx(i, 0, seed=i) for i in range(300)], np.zeros(300), 1).compute_s.mean()
    high = sm.costs([ctx(i, 2, seed=i) for i in range(300)], np.zeros(300), 1).compute_s.mean()
    assert 2 <= low / high <= 6  # RF² §2.2.3: 2-6x


def test_profile_overrides_and_errors():
    sm = SystemModel(("low", "mid", "high"), {"low": {"upload_mbps": 2.0}})
    assert sm.profiles[0].upload_mbps == 2.0 and sm.profiles[0].ms_per_sample == DEFAULT_PROFILES["low"].ms_per_sample
    with pytest.raises(ValueError, match="unknown tier 'lowest'"):
        SystemModel(("low", "mid", "high"), {"lowest": {"upload_mbps": 2.0}})
    with pytest.raises(ValueError, match="unknown field"):
        SystemModel(("low", "mid", "high"), {"low": {"bandwidth": 2.0}})
    with pytest.raises(ValueError, match="must be > 0"):
        SystemModel(("low", "mid", "high"), {"low": {"upload_mbps": 0.0}})
    five = SystemModel(tuple(f"tier{i}" for i in range(5)))
    speeds = [p.ms_per_sample for p in five.profiles]
    assert speeds == sorted(speeds, reverse=True)


def test_results_carry_costs():
    res = Simulation(RunConfig(**SMALL, optimization="quant:1:2:4"), progress=False).run()
    bt = res.metrics.by_tier
    # 8 / 16 / 32 bits: the low tier uploads ~1/4 per participation of the high tier
    per = bt["upload_mb"] / bt["participations"]
    assert per["low"] / per["high"] == pytest.approx(8 / 32, rel=0.01)
    assert res.metrics.overall["sim_wall_h"] > 0

