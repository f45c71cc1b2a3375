"""Algorithm 1's argument checks and options (tier_mapping/dirichlet.py) beyond the oracle tests
of test_tier_mapping.py; written against mutants that survived the suite (benchmarks/MUTATION.md)."""
from __future__ import annotations

import numpy as np
import pytest

from rf2.data import make_synthetic
from tier_mapping.dirichlet import dirichlet_mapping


@pytest.fixture(scope="module")
def log():
    ds = make_synthetic(n_users=300, n_items=60, events_per_user=6, seed=9)
    return ds.user, ds.item, ds.label, ds.n_users, ds.n_items


def test_default_seed_is_zero(log):
    assert np.array_equal(dirichlet_mapping(*log, alpha=0.1).tier, dirichlet_mapping(*log, alpha=0.1, seed=0).tier)
    assert dirichlet_mapping(*log, alpha=0.1).seed == 0


def test_two_tiers_are_allowed_one_is_not(log):
    two = dirichlet_mapping(*log, alpha=0.5, n_tiers=2)
    assert two.n_tiers == 2 and set(np.unique(two.tier)) == {0, 1}
    with pytest.raises(ValueError, match=r"^n_tiers must be >= 2, got 1$"):
        dirichlet_mapping(*log, alpha=0.5, n_tiers=1)


@pytest.mark.parametrize("kw,msg", [
    ({"draw": "coin"}, r"^draw must be one of \['split', 'bernoulli'\], got 'coin'$"),
    ({"tie": "left"}, r"^tie must be one of \['low', 'high', 'random'\], got 'left'$"),
])
def test_bad_options_name_the_option_and_the_choices(log, kw, msg):
    with pytest.raises(ValueError, match=msg):
        dirichlet_mapping(*log, alpha=0.5, **kw)


def test_null_option_reaches_the_visiting_order(log):
    user, item, label, n_users, n_items = log
    clickless = np.setdiff1d(np.arange(n_users), user[label == 1])
    assert clickless.size >= 20  # enough users for the pseudo-item's place to matter
    a = dirichlet_mapping(*log, alpha=0.05, null="sorted").tier
    b = dirichlet_mapping(*log, alpha=0.05, null="last").tier
    assert not np.array_equal(a[clickless], b[clickless])


def test_random_tie_order_comes_from_the_seed(log):
    runs = [dirichlet_mapping(*log, alpha=0.05, tie="random", seed=4).tier for _ in range(8)]
    assert all(np.array_equal(runs[0], r) for r in runs[1:])
    # the tie order matters: the three orders low / high / random do not all agree
    low, high = (dirichlet_mapping(*log, alpha=0.05, tie=t, seed=4).tier for t in ("low", "high"))
    assert not np.array_equal(low, high)


def test_assignment_records_its_spec_and_seed(log):
    m = dirichlet_mapping(*log, alpha=0.05, seed=3)
    assert (m.spec, m.seed) == ("dirichlet:0.05", 3)
    assert dirichlet_mapping(*log, alpha=0.05, seed=3, spec="dirichlet:0.05:draw=split").spec == "dirichlet:0.05:draw=split"


def test_random_ties_without_an_order_are_refused():
    from tier_mapping.dirichlet import assign_tiers

    p = np.array([[0.5, 0.3, 0.2]])
    with pytest.raises(ValueError, match=r"^tie='random' needs tie_order, a permutation of the tiers$"):
        assign_tiers(np.zeros(4, dtype=np.int64), p, np.linspace(0, 0.9, 4), tie="random")


def test_bad_null_option_names_the_choices():
    from tier_mapping.dirichlet import first_items

    with pytest.raises(ValueError, match=r"^null must be one of \['sorted', 'last'\], got 'first'$"):
        first_items(np.array([0]), np.array([0]), np.array([1]), 1, 1, null="first")


def test_a_log_without_items_puts_every_user_in_the_null_item():
    # no items at all: the only visiting rank is the pseudo-item (id 0 = n_items), every user's first rank is 0
    from tier_mapping.dirichlet import first_items

    order, first_rank = first_items(
        np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), 4, 0)
    assert order.tolist() == [0] and first_rank.tolist() == [0, 0, 0, 0]


def test_assign_tiers_refuses_an_unknown_tie_rule_by_name():
    from tier_mapping.dirichlet import assign_tiers

    p = np.array([[0.5, 0.3, 0.2]])
    with pytest.raises(ValueError, match=r"^tie must be one of \['low', 'high', 'random'\], got 'left'$"):
        assign_tiers(np.zeros(4, dtype=np.int64), p, np.linspace(0, 0.9, 4), tie="left")
