"""Exclude Lo, Overselect and the system cost model."""
from __future__ import annotations

import numpy as np
import pytest

from optimizations import ClientContext, Overselect, parse_optimization
from rf2.config import RunConfig
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


def test_overselect_time_drops_the_slowest():
    opt = Overselect("overselect:0.2:drop=time", 0.2, drop="time")
    assert parse_optimization("overselect:0.2:drop=time").drop == "time"
    assert opt.selection_size(10) == 12
    cands = [ctx(i, i % 3) for i in range(12)]
    times = np.array([5, 1, 9, 2, 8, 3, 7, 4, 6, 10, 0.5, 11.0])
    kept = opt.participants(cands, lambda cs: times[[c.client_id for c in cs]])
    assert len(kept) == 10
    assert {c.client_id for c in kept} == set(range(12)) - {9, 11}
    with pytest.raises(ValueError, match="system model"):
        opt.participants(cands)


@pytest.mark.parametrize("k,f,size", [(10, 0.2, 12), (16, 0.2, 19), (32, 0.2, 38), (100, 0.29, 129), (5, 0.1, 5),
                                      (100, 0.2, 120), (7, 1.5, 17)])
def test_overselect_draws_floor_k_1_plus_f(k, f, size):
    # the authors' simulator: floor(K(1+r)) drawn, floor(Kr) dropped, K kept (on the decimal r: 100 * 0.29 = 29)
    for drop in ("tier", "time"):
        opt = parse_optimization(f"overselect:{f}:drop={drop}")
        assert opt.selection_size(k) == size
        assert opt.kept(size) == k


def test_overselect_tier_drops_lowest_tier_first():
    opt = parse_optimization("overselect:0.25")  # K = 8: 10 drawn, 2 dropped
    assert opt.drop == "tier" and opt.selection_size(8) == 10
    # one low candidate: it goes, then one of the three mid ones; high is never touched
    tiers = [2, 1, 2, 0, 1, 2, 1, 2, 2, 2]
    cands = [ctx(i, t, seed=1000 + i) for i, t in enumerate(tiers)]
    kept = opt.participants(cands)  # no system model needed
    dropped = [c for c in cands if c not in kept]
    assert len(kept) == 8 and sorted(c.tier for c in dropped) == [0, 1]
    assert [c.client_id for c in kept] == sorted(c.client_id for c in kept)  # candidate order kept
    # which mid candidate goes is the one with the smallest seeded key
    mids = [c for c in cands if c.tier == 1]
    keys = [c.rng("overselect-drop").random() for c in mids]
    assert [c for c in dropped if c.tier == 1] == [mids[int(np.argmin(keys))]]
    # deterministic for the same seeds; other seeds drop other mid candidates
    assert opt.participants(cands) == kept
    chosen = set()
    for s in range(30):
        cs = [ctx(i, t, seed=50 * s + i) for i, t in enumerate(tiers)]
        chosen |= {c.client_id for c in cs if c not in opt.participants(cs) and c.tier == 1}
    assert chosen == {1, 4, 6}
    # more to drop than low candidates: all low first, then mid
    cands = [ctx(i, t, seed=i) for i, t in enumerate([0, 1, 1, 2, 2, 2, 2, 2, 2, 2])]
    dropped = [c for c in cands if c not in opt.participants(cands)]
    assert sorted(c.tier for c in dropped) == [0, 1]


def test_overselect_in_a_run_drops_mostly_low_tier():
    for spec in ("overselect:0.2", "overselect:0.2:drop=time"):
        res = Simulation(RunConfig(**SMALL, optimization=spec), progress=False).run()
        bt = res.metrics.by_tier
        assert bt["dropped"].sum() > 0
        assert bt.loc["low", "dropped"] > bt.loc["high", "dropped"]
        assert (res.rounds["selected"][:-1] == 30).all() and (res.rounds["participants"][:-1] == 25).all()
        if spec == "overselect:0.2":  # ~1/3 of 30 candidates are low: 5 low ones nearly always there to drop
            assert bt.loc["high", "dropped"] == 0


def test_costs_by_hand():
    # no device variation (sd 0): times are the profiles' means, worked out by hand
    sm = SystemModel(("low", "mid", "high"), {"low": {"ms_per_sample": 10.0, "ms_per_sample_std": 0.0, "upload_mbps": 2.0},
                                              "high": {"ms_per_sample": 4.0, "ms_per_sample_std": 0.0, "upload_mbps": 8.0}})
    cs = [ctx(1, 0, n=20, seed=111), ctx(2, 2, n=5, seed=222)]
    costs = sm.costs(cs, np.array([8e6, 4e6]), local_steps=2, compute_fraction=np.array([0.5, 1.0]))
    # low: 20 samples x 2 steps x 10 ms x half the model = 0.2 s; 8 Mbit at 2 Mbit/s = 4 s
    # high: 5 x 2 x 4 ms = 0.04 s; 4 Mbit at 8 Mbit/s = 0.5 s
    assert costs.compute_s.tolist() == pytest.approx([0.2, 0.04])
    assert costs.upload_s.tolist() == pytest.approx([4.0, 0.5])
    assert costs.total_s.tolist() == pytest.approx([4.2, 0.54])
    assert costs.bits.tolist() == [8e6, 4e6]
    # no compute_fraction: the full model
    assert sm.costs(cs[:1], np.zeros(1), local_steps=3).compute_s.tolist() == pytest.approx([0.6])
    # FLASH defaults: 6.6 vs 0.43 Mbit/s, so the same upload takes 6.6 / 0.43 times longer on a low phone
    flash = SystemModel(("low", "mid", "high")).costs(cs, np.array([8e6, 8e6]), local_steps=1)
    assert flash.upload_s.tolist() == pytest.approx([8 / 0.43, 8 / 6.6])


def test_device_times_are_per_client_draws_of_the_profile():
    sm = SystemModel(("low", "mid", "high"), {"mid": {"ms_per_sample": 10.0, "ms_per_sample_std": 2.0}})
    n = 4000
    per_sample_ms = sm.costs([ctx(i, 1, n=1, seed=i) for i in range(n)], np.zeros(n), 1).compute_s * 1000
    # mean and spread of N(10, 2) within 5 standard errors
    assert per_sample_ms.mean() == pytest.approx(10.0, abs=5 * 2.0 / np.sqrt(n))
    assert per_sample_ms.std() == pytest.approx(2.0, abs=5 * 2.0 / np.sqrt(2 * n))
    # a client's draw depends on its context's seed only: same seed, same time
    again = sm.costs([ctx(7, 1, n=1, seed=7), ctx(3, 1, n=1, seed=3)], np.zeros(2), 1).compute_s * 1000
    assert again.tolist() == pytest.approx([per_sample_ms[7], per_sample_ms[3]])
    # a very wide profile is truncated at 10% of its mean, never negative or zero
    wide = SystemModel(("low", "mid", "high"), {"high": {"ms_per_sample": 1.0, "ms_per_sample_std": 100.0}})
    t = wide.costs([ctx(i, 2, n=1, seed=i) for i in range(400)], np.zeros(400), 1).compute_s * 1000
    assert t.min() == pytest.approx(0.1)
    assert (t >= 0.1 - 1e-12).all() and 0.3 < (t == t.min()).mean() < 0.7  # about half the draws are below 0.1


def test_default_profiles_follow_flash():
    from rf2.system import PRESETS

    # slowdowns vs the high-end phone in FLASH (Yang et al. 2021): mean and sd over 4 workloads, x 2.0 ms
    per_batch = {"femnist": (1642, 588, 179), "celeba": (5392, 1355, 561), "reddit": (2596, 916, 528),
                 "shakespeare": (28621, 13579, 10681)}
    slow = np.array([[v / w[2] for v in w] for w in per_batch.values()])
    p = PRESETS["flash"]
    assert [p["low"].ms_per_sample, p["mid"].ms_per_sample] == pytest.approx(2.0 * slow.mean(0)[:2], abs=0.05)
    assert [p["low"].ms_per_sample_std, p["mid"].ms_per_sample_std] == pytest.approx(2.0 * slow.std(0, ddof=1)[:2],
                                                                                        abs=0.05)
    assert [p[t].upload_mbps for t in ("low", "mid", "high")] == [0.43, 3.3, 6.6]
    assert DEFAULT_PROFILES is PRESETS["flash"]
    # rf2 0.1's placeholders stay available as a preset, alone or with overrides
    old = SystemModel(("low", "mid", "high"), {"preset": "rf2-0.1"})
    assert [(q.ms_per_sample, q.ms_per_sample_std, q.upload_mbps) for q in old.profiles] == [
        (8.0, 2.0, 1.0), (4.0, 1.0, 10.0), (2.0, 0.5, 100.0)]
    mixed = SystemModel(("low", "mid", "high"), {"preset": "rf2-0.1", "mid": {"upload_mbps": 5.0}})
    assert mixed.profiles[1].upload_mbps == 5.0 and mixed.profiles[0].upload_mbps == 1.0
    with pytest.raises(ValueError, match=r"preset must be one of \['flash', 'rf2-0.1'\]"):
        SystemModel(("low", "mid", "high"), {"preset": "fast"})


def test_low_tier_is_slower_on_average():
    sm = SystemModel(("low", "mid", "high"))
    low = sm.costs([ctx(i, 0, seed=i) for i in range(300)], np.zeros(300), 1).compute_s.mean()
    high = sm.costs([ctx(i, 2, seed=i) for i in range(300)], np.zeros(300), 1).compute_s.mean()
    assert 5 <= low / high <= 8.5  # FLASH: 6.6x on average (2.7-9.6x across workloads)


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

