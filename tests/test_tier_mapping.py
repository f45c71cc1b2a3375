"""Algorithm 1 (RF² §4.2): an oracle, its properties, and the random mapping."""
from __future__ import annotations

import numpy as np
import torch
import pytest

from rf2.data import make_synthetic
from tier_mapping import (
    PAPER_MAPPINGS, MappingSpec, assign_tiers, dirichlet_mapping, first_items, map_tiers, parse_mapping,
    parse_mapping_spec, random_mapping, shuffle_mapping,
)
from tier_mapping.report import report_for


def algorithm1_literal(user, item, label, n_users, n_items, p, r, balance=True, draw="bernoulli", tie="low",
                       null="last", tie_order=None):
    """Algorithm 1 line by line, with the draws given: p[k] for the item of visiting rank k,
    r[u] for user u (its draw, or its shuffle key for draw="split")."""
    clicked = label == 1
    clickers = {i: [] for i in range(n_items)}
    for u, i in zip(user[clicked], item[clicked]):
        if int(u) not in clickers[int(i)]:
            clickers[int(i)].append(int(u))
    silent = [u for u in range(n_users) if u not in set(user[clicked].tolist())]
    groups = [(len(clickers[i]), i, clickers[i]) for i in range(n_items)]
    null_size = -1 if null == "last" else len(silent)
    groups.append((null_size, n_items, silent))  # the null item, id n_items
    groups.sort(key=lambda g: (-g[0], g[1]))  # line 2: by popularity (distinct users), ties by id
    T = p.shape[1]
    tiers = [set() for _ in range(T)]
    seen = set()
    tie_key = {"low": lambda t: t, "high": lambda t: -t,
               "random": lambda t: list(tie_order).index(t) if tie_order is not None else t}[tie]
    for rank, (_, _, users) in enumerate(groups):
        probs = p[rank]
        if balance:
            slots = sorted(range(T), key=lambda k: -probs[k])  # line 4
            probs = probs[slots]
            by_size = sorted(range(T), key=lambda t: (len(tiers[t]), tie_key(t)))  # line 5, smallest first
        else:
            by_size = list(range(T))
        new = [u for u in users if u not in seen]  # lines 6-7
        if draw == "bernoulli":
            for u in new:
                cum, k = 0.0, T - 1
                for j, pj in enumerate(probs):  # lines 9-11
                    cum += pj
                    if r[u] < cum:
                        k = j
                        break
                tiers[by_size[k]].add(u)
        else:  # shuffle (by r), then cut at floor(n * cumulative proportion)
            new = sorted(new, key=lambda u: r[u])
            n = len(new)
            cuts = [int(np.floor(n * c)) for c in np.cumsum(probs)[:-1]] + [n]
            lo = 0
            for k, hi in enumerate(cuts):
                tiers[by_size[k]].update(new[lo:max(lo, hi)])
                lo = max(lo, hi)
        seen.update(new)  # line 12
    out = np.empty(n_users, dtype=int)
    for t, members in enumerate(tiers):
        out[list(members)] = t
    return out


@pytest.mark.parametrize("alpha,balance", [(0.05, True), (1.0, True), (0.05, False), (50.0, True)])
@pytest.mark.parametrize("draw,null", [("split", "sorted"), ("bernoulli", "last"), ("split", "last"), ("bernoulli", "sorted")])
def test_fast_mapping_equals_literal_algorithm1(synth, alpha, balance, draw, null):
    ds = synth
    label = ds.label.copy()
    label[np.isin(ds.user, np.arange(40))] = 0  # 40 click-less users: a sizeable null item
    rng = np.random.default_rng(7)
    p = rng.dirichlet([alpha] * 3, size=ds.n_items + 1)
    r = rng.random(ds.n_users)
    for tie, tie_order in (("low", None), ("high", None), ("random", np.array([2, 0, 1]))):
        _, first_rank = first_items(ds.user, ds.item, label, ds.n_users, ds.n_items, null)
        fast = assign_tiers(first_rank, p, r, balance, draw=draw, tie=tie, tie_order=tie_order)
        slow = algorithm1_literal(ds.user, ds.item, label, ds.n_users, ds.n_items, p, r, balance, draw, tie, null,
                                  tie_order)
        assert np.array_equal(fast, slow), (tie, draw, null)


def test_split_by_hand():
    """Six users, items A (clicked by users 0-4) and B (users 4, 5); user 6 never clicks.
    Visiting order: A (5 users), B (2), null (1)."""
    user = np.array([0, 1, 2, 3, 4, 4, 5, 6])
    item = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    label = np.array([1, 1, 1, 1, 1, 1, 1, 0])
    order, first_rank = first_items(user, item, label, 7, 2)
    assert order.tolist() == [0, 1, 2] and first_rank.tolist() == [0, 0, 0, 0, 0, 1, 2]
    p = np.array([[0.2, 0.5, 0.3],   # A: sorted 0.5, 0.3, 0.2 -> cuts floor(5 * 0.5) = 2, floor(5 * 0.8) = 4
                  [0.1, 0.1, 0.8],   # B: one new user (5): cuts floor(0.8) = floor(0.9) = 0 -> the last share
                  [1.0, 0.0, 0.0]])  # null: user 6: cuts floor(1.0) = 1 -> the first (largest) share
    r = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.4])  # shuffle keys: A's order 1, 3, 2, 4, 0
    # A, all tiers empty: largest share (users 1, 3) -> tier 0 (lowest index), next (2, 4) -> tier 1, last (0) -> tier 2
    # B: sizes 2, 2, 1 -> tiers by size 2, 0, 1; user 5 in the last share -> tier 1
    # null: sizes 2, 3, 1 -> tiers by size 2, 0, 1; user 6 in the first share -> tier 2
    assert assign_tiers(first_rank, p, r).tolist() == [2, 0, 1, 0, 1, 1, 2]
    # tie=high: A's largest share to tier 2, next to tier 1, last to tier 0 (sizes 1, 2, 2);
    # B: tiers by size 0, 2, 1 -> user 5 (last share) to tier 1; null: sizes 1, 3, 2 -> user 6 to tier 0
    assert assign_tiers(first_rank, p, r, tie="high").tolist() == [0, 2, 1, 2, 1, 1, 0]
    # bernoulli (the paper's text): r against the cumulative proportions. A (0.5, 0.8, 1): users 0..4 -> shares
    # 2, 0, 1, 0, 1; B (0.8, 0.9, 1): r = 0.2 -> share 0 -> tier 2; null: share 0, sizes 2, 2, 2 -> tier 0
    assert assign_tiers(first_rank, p, r, draw="bernoulli").tolist() == [2, 0, 1, 0, 1, 2, 0]
    r2 = r.copy()
    r2[[1, 3]] = 0.95  # every A user now in a late slot under bernoulli; split still cuts 2 / 2 / 1
    assert np.bincount(assign_tiers(first_rank, p, r2, draw="bernoulli")[:5], minlength=3).tolist() != [2, 2, 1]
    assert sorted(np.bincount(assign_tiers(first_rank, p, r2)[:5], minlength=3).tolist()) == [1, 2, 2]


def test_null_item_is_sorted_among_items_by_its_size():
    # item 0: 3 users, item 1: 1 user; 2 click-less users -> the null item is visited second
    user = np.array([0, 1, 2, 3, 4, 5])
    item = np.array([0, 0, 0, 1, 1, 1])
    label = np.array([1, 1, 1, 1, 0, 0])
    order, first_rank = first_items(user, item, label, 6, 2)
    assert order.tolist() == [0, 2, 1] and first_rank.tolist() == [0, 0, 0, 2, 1, 1]
    order, first_rank = first_items(user, item, label, 6, 2, null="last")
    assert order.tolist() == [0, 1, 2] and first_rank.tolist() == [0, 0, 0, 1, 2, 2]


def test_popularity_counts_users_not_clicks_and_includes_test_clicks():
    # item 1 is clicked 3 times by one user, item 0 once each by two users -> item 0 first
    user = np.array([0, 0, 0, 1, 2])
    item = np.array([1, 1, 1, 0, 0])
    label = np.array([1, 1, 1, 1, 1])
    order, _ = first_items(user, item, label, 3, 2)
    assert order[:2].tolist() == [0, 1]
    # map_tiers uses every event: a dataset's test clicks count for popularity
    ds = make_synthetic(n_users=200, n_items=60, events_per_user=12, seed=9)
    ev = ds.events
    full = first_items(ds.user, ds.item, ds.label, ds.n_users, ds.n_items)[1]
    train = ~ev["is_test"].to_numpy()
    only_train = first_items(ds.user[train], ds.item[train], ds.label[train], ds.n_users, ds.n_items)[1]
    assert not np.array_equal(full, only_train)
    t = map_tiers(ds, "dirichlet:0.05", seed=3)
    rng = np.random.default_rng(3)
    p = rng.dirichlet([0.05] * 3, size=ds.n_items + 1)
    assert np.array_equal(t.tier, assign_tiers(full, p, rng.random(ds.n_users)))


def test_tie_rule_decides_who_gets_the_first_items_largest_share(synth):
    # tiny alpha: the first (most popular) item's users all take its largest share
    _, first_rank = first_items(synth.user, synth.item, synth.label, synth.n_users, synth.n_items)
    top = first_rank == 0
    for spec, tier in (("dirichlet:0.0001", 0), ("dirichlet:0.0001:tie=low", 0), ("dirichlet:0.0001:tie=high", 2)):
        t = map_tiers(synth, spec, seed=1)
        assert (t.tier[top] == tier).all(), spec
    seen = {int(np.bincount(map_tiers(synth, "dirichlet:0.0001:tie=random", seed=s).tier[top]).argmax()) for s in range(12)}
    assert seen == {0, 1, 2}
    # the tie rule changes only the tie breaks: same draws, so unbalanced mappings are identical
    a = map_tiers(synth, "dirichlet:0.05:unbalanced", seed=2)
    assert a == map_tiers(synth, "dirichlet:0.05:tie=high:unbalanced", seed=2)
    assert a == map_tiers(synth, "dirichlet:0.05:unbalanced:tie=random", seed=2)


def test_split_follows_proportions_exactly_where_bernoulli_only_on_average():
    # one item clicked by everybody, alpha large (p ~ uniform): split gives sizes floor-exact
    n = 300
    user = np.arange(n)
    item = np.zeros(n, dtype=int)
    label = np.ones(n, dtype=int)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        p = rng.dirichlet([1.0] * 3, size=2)
        ps = np.sort(p[0])[::-1]
        cuts = np.floor(n * np.cumsum(ps)[:-1]).astype(int)
        want = np.diff(np.r_[0, cuts, n])
        t = dirichlet_mapping(user, item, label, n, 1, alpha=1.0, seed=seed)
        assert sorted(t.sizes().tolist()) == sorted(want.tolist())
        assert t.sizes().tolist() == want.tolist()  # all empty: shares to tiers 0, 1, 2 (tie=low)


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
        spread = [np.ptp(map_tiers(ds, f"dirichlet:{alpha}:draw=bernoulli", seed=s).sizes()) for s in range(4)]
        loose = [np.ptp(map_tiers(ds, f"dirichlet:{alpha}:draw=bernoulli:unbalanced", seed=s).sizes()) for s in range(4)]
        # lines 4-5 give the next item's users to the emptiest tier: the spread stays below the
        # largest group of users that one item brings in (exactly so for one-hot p)
        assert max(spread) <= largest_group
        # ... and far below the spread without lines 4-5
        assert np.mean(spread) * 4 < np.mean(loose)
        # draw=split (default): cutting at floor(n * cumulative proportion) gives every remainder to
        # the last (smallest) share, i.e. the currently largest tier; with one-hot p there is no
        # remainder and the bound holds; otherwise balancing is weaker, but still better than none
        split = [np.ptp(map_tiers(ds, f"dirichlet:{alpha}", seed=s).sizes()) for s in range(4)]
        split_loose = [np.ptp(map_tiers(ds, f"dirichlet:{alpha}:unbalanced", seed=s).sizes()) for s in range(4)]
        if alpha == "0.001":
            assert max(split) <= largest_group
        assert np.mean(split) < np.mean(split_loose)


def test_null_item_users_share_a_tier_under_tiny_alpha():
    ds = make_synthetic(n_users=1500, n_items=500, events_per_user=6, click_rate=0.15, seed=4)
    order, first_rank = first_items(ds.user, ds.item, ds.label, ds.n_users, ds.n_items)
    silent = first_rank == int(np.flatnonzero(order == ds.n_items)[0])  # the null item's visiting rank
    assert silent.sum() > 50 and not np.isin(np.flatnonzero(silent), ds.user[ds.label == 1]).any()
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


def test_shuffle_mapping_has_equal_tiers():
    t = shuffle_mapping(1000, 3, seed=4)
    assert sorted(t.sizes().tolist()) == [333, 333, 334]
    assert t != shuffle_mapping(1000, 3, seed=5)


def test_random_mapping_deals_users_by_training_events():
    counts = np.array([7, 1, 4, 9, 2, 5, 3, 8, 6])  # distinct: sorted users 1, 4, 6, 2, 5, 8, 0, 7, 3
    t = random_mapping(counts, 3, seed=0)
    assert t.tier.tolist() == [0, 0, 0, 2, 1, 1, 2, 1, 2]  # position mod 3: u1 0, u4 1, u6 2, u2 0, ...
    # ties are broken by a seeded random order: equal counts give seed-dependent tiers
    flat = np.zeros(30, dtype=int)
    assert random_mapping(flat, 3, seed=1) != random_mapping(flat, 3, seed=2)
    assert random_mapping(flat, 3, seed=1) == random_mapping(flat, 3, seed=1)


def test_random_mapping_balances_users_and_data_volume():
    ds = make_synthetic(n_users=900, n_items=100, events_per_user=20, seed=6)
    for seed in range(3):
        t = map_tiers(ds, "random", seed=seed)
        assert t.sizes().tolist() == [300, 300, 300]
        vol = np.bincount(t.tier, weights=ds.train_counts, minlength=3)
        # dealt in turn by count: tier t has, position by position, no more than tier t + 1
        assert vol[0] <= vol[1] <= vol[2] and vol[2] - vol[0] <= ds.train_counts.max()
        for lo in range(2):
            a = np.sort(ds.train_counts[t.tier == lo])
            b = np.sort(ds.train_counts[t.tier == lo + 1])
            assert (a <= b).all()
    shuffled = map_tiers(ds, "random:shuffle", seed=0)
    assert shuffled == shuffle_mapping(ds.n_users, 3, seed=0)
    assert map_tiers(ds, "random", seed=0) != map_tiers(ds, "random", seed=1)


def test_mapping_options_combine_in_any_order():
    a = parse_mapping_spec("dirichlet:0.05:tie=high:unbalanced")
    assert a == parse_mapping_spec("dirichlet:0.05:unbalanced:tie=high")
    assert a == MappingSpec("dirichlet", 0.05, balance=False, draw="split", tie="high", null="sorted")
    b = parse_mapping_spec(" Dirichlet:0.5:NULL=last:draw=bernoulli:tie=random ")
    assert (b.draw, b.tie, b.null, b.balance) == ("bernoulli", "random", "last", True)
    assert parse_mapping_spec("hetero-high:tie=high") == parse_mapping_spec("dirichlet:0.05:tie=high")
    assert parse_mapping_spec("dirichlet:0.05") == MappingSpec("dirichlet", 0.05)
    assert parse_mapping_spec("random:shuffle").shuffle and not parse_mapping_spec("random").shuffle
    assert parse_mapping("dirichlet:0.05:tie=high:unbalanced") == ("dirichlet", 0.05, False)


@pytest.mark.parametrize("spec,match", [
    ("dirichlet:0.05:tie=mid", r"option 'tie' must be one of \['low', 'high', 'random'\]"),
    ("dirichlet:0.05:draw=poisson", r"option 'draw' must be one of \['split', 'bernoulli'\]"),
    ("dirichlet:0.05:tie=low:tie=high", "given more than once"),
    ("dirichlet:0.05:unbalanced:balanced", "given more than once"),
    ("dirichlet:0.05:speed=3", "unknown option 'speed=3'"),
    ("random:sorted", "'random' takes no option but 'shuffle'"),
])
def test_bad_mapping_options_are_one_line_errors(spec, match):
    with pytest.raises(ValueError, match=match) as exc:
        parse_mapping_spec(spec)
    msg = str(exc.value)
    assert repr(spec) in msg and "dirichlet:ALPHA" in msg and "tie=low|high|random" in msg and "\n" not in msg


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
