"""Algorithm 1 (RF² §4.2): an oracle, its properties, and the random mapping."""
from __future__ import annotations

import numpy as np
import torch
import pytest

from rf2.data import make_synthetic
from tier_mapping import (
    PAPER_MAPPINGS, assign_tiers, dirichlet_mapping, first_items, map_tiers, parse_mapping, random_mapping,
)
from tier_mapping.report import report_for


def algorithm1_literal(user, item, label, n_users, n_items, p, r, balance=True):
    """Algorithm 1 line by line, with the draws given: p[k] for the item of popularity rank k
    (row n_items: the null item), r[u] for user u."""
    clicked = label == 1
    pop = np.bincount(item[clicked], minlength=n_items)
    order = sorted(range(n_items), key=lambda i: (-pop[i], i))  # line 2
    tiers = [set() for _ in range(p.shape[1])]
    seen = set()
    clickers = {i: [] for i in range(n_items)}
    for u, i in zip(user[clicked], item[clicked]):
        clickers[int(i)].append(int(u))
    visits = [(rank, clickers[i]) for rank, i in enumerate(order)]
    visits.append((n_items, [u for u in range(n_users) if u not in set(user[clicked].tolist())]))  # null item
    for rank, users in visits:
        probs = p[rank]
        if balance:
            slots = sorted(range(len(probs)), key=lambda k: -probs[k])  # line 4
            probs = probs[slots]
            by_size = sorted(range(len(tiers)), key=lambda t: (len(tiers[t]), t))  # line 5, smallest first
        else:
            by_size = list(range(len(tiers)))
        for u in users:  # line 6
            if u in seen:  # line 7
                continue
            cum, k = 0.0, len(probs) - 1
            for j, pj in enumerate(probs):  # lines 9-11
                cum += pj
                if r[u] < cum:
                    k = j
                    break
            tiers[by_size[k]].add(u)
            seen.add(u)  # line 12
    out = np.empty(n_users, dtype=int)
    for t, members in enumerate(tiers):
        out[list(members)] = t
    return out


@pytest.mark.parametrize("alpha,balance", [(0.05, True), (1.0, True), (0.05, False), (50.0, True)])
def test_fast_mapping_equals_literal_algorithm1(synth, alpha, balance):
    ds = synth
    rng = np.random.default_rng(7)
    p = rng.dirichlet([alpha] * 3, size=ds.n_items + 1)
    r = rng.random(ds.n_users)
    _, first_rank = first_items(ds.user, ds.item, ds.label, ds.n_users, ds.n_items)
    fast = assign_tiers(first_rank, p, r, balance)
    slow = algorithm1_literal(ds.user, ds.item, ds.label, ds.n_users, ds.n_items, p, r, balance)
    assert np.array_equal(fast, slow)


def test_users_without_clicks_are_mapped(synth):
    ds = synth
    label = ds.label.copy()
    silent = np.isin(ds.user, [0, 1, 2, 3, 4])
    label[silent] = 0
    t = dirichlet_mapping(ds.user, ds.item, label, ds.n_users, ds.n_items, alpha=0.001, seed=0)
    assert t.tier.size == ds.n_users
    # tiny alpha: the null item's p is one-hot, so all click-less users share one tier
    assert len(set(t.tier[[0, 1, 2, 3, 4]].tolist())) == 1


def test_balanced_sizes_bounded_by_largest_first_item_group():
    # every user clicks something (no big null-item group), clicks spread over many items
    ds = make_synthetic(n_users=3000, n_items=3000, events_per_user=20, zipf=0.5, click_rate=0.4, seed=1)
    _, first_rank = first_items(ds.user, ds.item, ds.label, ds.n_users, ds.n_items)
    largest_group = np.bincount(first_rank).max()
    for alpha in ("0.001", "0.05", "1"):
        spread = [np.ptp(map_tiers(ds, f"dirichlet:{alpha}", seed=s).sizes()) for s in range(4)]
        loose = [np.ptp(map_tiers(ds, f"dirichlet:{alpha}:unbalanced", seed=s).sizes()) for s in range(4)]
        # lines 4-5 give the next item's users to the emptiest tier: the spread stays below the
        # largest group of users that one item brings in (exactly so for one-hot p)
        assert max(spread) <= largest_group
        # ... and far below the spread without lines 4-5
        assert np.mean(spread) * 4 < np.mean(loose)


def test_null_item_users_share_a_tier_under_tiny_alpha():
    ds = make_synthetic(n_users=1500, n_items=500, events_per_user=6, click_rate=0.15, seed=4)
    _, first_rank = first_items(ds.user, ds.item, ds.label, ds.n_users, ds.n_items)
    silent = first_rank == ds.n_items
    assert silent.sum() > 50
    t = map_tiers(ds, "dirichlet:0.001", seed=0)
    assert np.unique(t.tier[silent]).size == 1


def test_alpha_controls_heterogeneity():
    ds = make_synthetic(n_users=6000, n_items=400, events_per_user=25, seed=2)
    jsd = {m: np.mean([report_for(ds, map_tiers(ds, m, seed=s)).mean_jsd for s in range(3)])
           for m in ("random", "dirichlet:5000", "dirichlet:0.005")}
    assert abs(jsd["dirichlet:5000"] - jsd["random"]) < 0.15 * jsd["random"]  # large alpha ~ random
    assert jsd["dirichlet:0.005"] > 3 * jsd["random"]  # tiny alpha: strongly heterogeneous


def test_heterogeneity_increases_along_paper_levels(ml100k):
    vs = [report_for(ml100k, map_tiers(ml100k, m, seed=0)).cramers_v for m in PAPER_MAPPINGS]
    assert vs[-1] > vs[3] > vs[0]  # vhigh > mid > random


def test_same_seed_same_mapping_other_seed_differs(synth):
    a = map_tiers(synth, "dirichlet:0.5", seed=11)
    b = map_tiers(synth, "dirichlet:0.5", seed=11)
    c = map_tiers(synth, "dirichlet:0.5", seed=12)
    assert a == b and a != c


def test_number_of_tiers_is_configurable(synth):
    t = map_tiers(synth, "dirichlet:0.1", n_tiers=5, seed=0)
    assert t.n_tiers == 5 and set(np.unique(t.tier)) <= set(range(5)) and t.sizes().min() > 0
    assert len(t.names) == 5


def test_random_mapping_has_equal_tiers():
    t = random_mapping(1000, 3, seed=4)
    assert sorted(t.sizes().tolist()) == [333, 333, 334]
    assert t != random_mapping(1000, 3, seed=5)


@pytest.mark.parametrize("spec", ["dirichlet:0", "dirichlet:-1", "dirichlet:abc", "dirichlet", "dirichlet:inf",
                                  "hetero-extreme", "dirichlet:0.5:sideways", ""])
def test_bad_mapping_specs_are_clear_errors(spec):
    with pytest.raises(ValueError, match="dirichlet:ALPHA"):
        parse_mapping(spec)


def test_paper_names_and_alpha_error_message():
    assert parse_mapping("hetero-vhigh") == ("dirichlet", 0.005, True)
    assert parse_mapping("dirichlet:5000") == ("dirichlet", 5000.0, True)
    with pytest.raises(ValueError, match="must be > 0"):
        parse_mapping("dirichlet:0")
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_mapping(np.array([0]), np.array([0]), np.array([1]), 1, 1, alpha=0.0)


def test_activity_mapping_orders_users_by_training_events():
    ds = make_synthetic(n_users=200, n_items=50, events_per_user=30, seed=5)
    t = map_tiers(ds, "activity:5:3:2", 3)
    counts = ds.train_counts
    assert np.bincount(t.tier, minlength=3).tolist() == [100, 60, 40]
    for lo in range(2):  # every user of a lower tier has at most as many training events as any higher one
        assert counts[t.tier == lo].max() <= counts[t.tier == lo + 1].min()
    # hand check on a tiny example: counts 5,1,3,1,9,2 with equal parts -> (1,1), (2,3), (5,9); ties by index
    from tier_mapping import count_groups

    assert count_groups(np.array([5, 1, 3, 1, 9, 2]), (1, 1, 1)).tolist() == [2, 0, 1, 0, 2, 1]
    eq = map_tiers(ds, "activity", 2)
    assert np.bincount(eq.tier).tolist() == [100, 100]


@pytest.mark.parametrize("spec,n,match", [
    ("activity:5:3", 3, "has 2 ratio parts but there are 3 tiers"),
    ("activity:5:x:2", 3, "ratio parts must be decimal numbers"),
    ("activity:0:1:1", 3, "ratio parts must be > 0"),
])
def test_activity_mapping_errors(spec, n, match):
    ds = make_synthetic(n_users=20, n_items=10, seed=0)
    with pytest.raises(ValueError, match=match):
        map_tiers(ds, spec, n)


def test_activity_tiers_reproduce_hetefedrec_count_groups():
    """hetefedrec group=tier under activity:5:3:2 trains exactly what group=count does (the
    mapping changes only which users each per-tier metric averages over)."""
    from rf2.config import RunConfig
    from rf2.simulation import Simulation

    base = RunConfig(dataset="synthetic", dataset_options={"n_users": 80, "n_items": 30, "user_id": True},
                     model="hetencf", model_options={"sizes": [4, 8, 16]}, clients_per_round=20, ranking_k=5)
    a = Simulation(base.replace(optimization="hetefedrec:4,8,16:group=count:ratio=5:3:2"), progress=False)
    b = Simulation(base.replace(optimization="hetefedrec:4,8,16:group=tier", mapping="activity:5:3:2"), progress=False)
    assert (a.optimization.group == b.optimization.group).all()
    ra, rb = a.run(), b.run()
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k]), k
    overall = lambda r: r.metrics.frame.query("tier == 'overall' and metric in ['auc', 'ndcg@5']")["value"].to_numpy()
    np.testing.assert_allclose(overall(ra), overall(rb))
    # per tier they differ: b's tiers are the size groups
    assert np.bincount(b.tiers.tier).tolist() == [40, 24, 16]
    per_tier = lambda r: r.metrics.frame.query("tier != 'overall' and metric == 'auc'")["value"].to_numpy()
    assert np.abs(per_tier(ra) - per_tier(rb)).max() > 1e-3
    with pytest.raises(ValueError, match="has 2 ratio parts but n_tiers=3"):
        base.replace(mapping="activity:1:1")
