"""A synthetic interaction log with MovieLens' schema, for tests, offline demos and scale runs.

Generative story (all randomness from one ``seed``):

* items have a power-law popularity (weight ``(rank+1)^-zipf``, ranks randomly permuted) and a
  home *cluster* (a latent taste group); each has a latent quality ``~ N(0, 1)`` and a log-price;
* users belong to one of ``n_clusters`` clusters; a user's ``region`` feature equals its cluster
  with probability ``region_signal`` (else uniform), age bucket and gender are uniform noise;
* a user has ``min_events + Geometric`` interactions (mean ``events_per_user``); each picks an
  item from the user's own cluster with probability ``affinity`` (else from all items), always
  proportionally to popularity; repeated (user, item) pairs are dropped;
* click probability ``sigmoid(bias + quality + match * [item cluster == user cluster])``, with
  ``bias`` set so the overall click rate is close to ``click_rate``.

The log is then treated exactly like MovieLens: click history from strictly earlier events,
per-user temporal split. It is never used in place of real data silently: it is only loaded
when asked for by name (``synthetic``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit

from .dataset import InteractionDataset
from .schema import DenseFeature, Schema, SequenceFeature, SparseFeature
from .split import LOO_MIN_INTERACTIONS, check_split, leave_one_out, temporal_split


def make_synthetic(
    n_users: int = 2000,
    n_items: int = 1000,
    events_per_user: float = 40.0,
    min_events: int = 5,
    n_clusters: int = 8,
    zipf: float = 1.0,
    affinity: float = 0.7,
    region_signal: float = 0.6,
    match: float = 1.5,
    click_rate: float = 0.2,
    test_fraction: float = 0.2,
    history_maxlen: int = 50,
    user_id: bool = False,
    seed: int = 0,
    split: str = "temporal",
    min_interactions: int = LOO_MIN_INTERACTIONS,
) -> InteractionDataset:
    """Generate the synthetic dataset (see the module docstring). ``split="leave-one-out"``:
    FedEM's implicit protocol instead of the temporal split (:func:`rf2.data.split.leave_one_out`;
    every event a positive, users below ``min_interactions`` dropped, 99 evaluation negatives per
    user drawn with ``seed``)."""
    check_split(split, min_interactions)
    _check(n_users >= 1, "n_users", n_users, ">= 1")
    _check(n_items >= 2, "n_items", n_items, ">= 2")
    _check(min_events >= 1, "min_events", min_events, ">= 1")
    _check(events_per_user >= min_events, "events_per_user", events_per_user, f">= min_events ({min_events})")
    _check(1 <= n_clusters <= n_items, "n_clusters", n_clusters, f"in [1, n_items={n_items}]")
    _check(zipf >= 0, "zipf", zipf, ">= 0")
    _check(0 <= affinity <= 1, "affinity", affinity, "in [0, 1]")
    _check(0 <= region_signal <= 1, "region_signal", region_signal, "in [0, 1]")
    _check(0 < click_rate < 1, "click_rate", click_rate, "in (0, 1)")
    rng = np.random.default_rng(seed)

    # items
    weight = (rng.permutation(n_items) + 1.0) ** -zipf
    item_cluster = rng.integers(0, n_clusters, n_items)
    item_cluster[:n_clusters] = np.arange(n_clusters)  # every cluster owns at least one item
    quality = rng.standard_normal(n_items)
    log_price = rng.normal(3.0, 1.0, n_items)

    # users
    user_cluster = rng.integers(0, n_clusters, n_users)
    keep = rng.random(n_users) < region_signal
    region = np.where(keep, user_cluster, rng.integers(0, n_clusters, n_users))
    extra_mean = events_per_user - min_events
    extra = rng.geometric(1.0 / (extra_mean + 1.0), n_users) - 1 if extra_mean > 0 else np.zeros(n_users, int)
    n_events = (min_events + extra).astype(np.int64)

    # item choices by inverse CDF: all items, and each cluster's items
    user = np.repeat(np.arange(n_users, dtype=np.int64), n_events)
    total = user.size
    global_cdf = np.cumsum(weight) / weight.sum()
    by_cluster = np.argsort(item_cluster, kind="stable")
    cl_sorted = item_cluster[by_cluster]
    cl_start = np.searchsorted(cl_sorted, np.arange(n_clusters))
    cl_end = np.searchsorted(cl_sorted, np.arange(n_clusters), side="right")
    cum = np.cumsum(weight[by_cluster])
    base = np.where(cl_start > 0, cum[np.maximum(cl_start - 1, 0)], 0.0)
    mass = cum[cl_end - 1] - base
    in_cluster = rng.random(total) < affinity
    r = rng.random(total)
    item = np.empty(total, dtype=np.int64)
    g = ~in_cluster
    item[g] = np.minimum(np.searchsorted(global_cdf, r[g], side="right"), n_items - 1)
    c = user_cluster[user[in_cluster]]
    target = base[c] + r[in_cluster] * mass[c]
    pos = np.clip(np.searchsorted(cum, target, side="right"), cl_start[c], cl_end[c] - 1)
    item[in_cluster] = by_cluster[pos]

    # drop repeats of a (user, item) pair, keep the first occurrence
    _, first = np.unique(user * n_items + item, return_index=True)
    first.sort()
    user, item = user[first], item[first]

    # timestamps: per-user strictly increasing (whole-second gaps >= 1), users start at random times;
    # events are then already in (user, timestamp) order, with no ties to break
    gaps = 1.0 + np.floor(rng.exponential(3600.0, user.size))
    start_of = np.r_[0, np.flatnonzero(np.diff(user)) + 1]
    csum = np.cumsum(gaps)
    offset = np.repeat(csum[start_of] - gaps[start_of], np.diff(np.r_[start_of, user.size]))
    t0 = rng.uniform(0, 365 * 86400.0, n_users)
    timestamp = np.floor(t0)[user].astype(np.int64) + (csum - offset).astype(np.int64) + 1_000_000_000

    logit0 = quality[item] + match * (item_cluster[item] == user_cluster[user])
    sub = logit0[rng.integers(0, logit0.size, min(logit0.size, 200_000))]  # the bias only needs to be close
    bias = brentq(lambda b: expit(b + sub).mean() - click_rate, -30, 30)
    label = (rng.random(user.size) < expit(bias + logit0)).astype(np.int8)

    user, item = user.astype(np.int32), item.astype(np.int32)
    events = pd.DataFrame({
        "user": user, "item": item, "label": label, "timestamp": timestamp,
        "is_test": temporal_split(user, test_fraction),
    })
    users = pd.DataFrame({
        "region": region.astype(np.int32),
        "age_bucket": rng.integers(0, 7, n_users).astype(np.int32),
        "gender": rng.integers(0, 2, n_users).astype(np.int32),
    }, index=pd.RangeIndex(n_users, name="user"))
    second = rng.integers(0, n_clusters, n_items)
    categories = np.stack([item_cluster + 1, np.where(second != item_cluster, second + 1, 0)], axis=1).astype(np.int32)
    items = pd.DataFrame({
        "item_id": np.arange(1, n_items + 1, dtype=np.int32),
        "log_price": ((log_price - log_price.mean()) / log_price.std()).astype(np.float32),
    }, index=pd.RangeIndex(n_items, name="item"))
    features = []
    if user_id:  # a user-id feature (user index + 1), for models with a private user embedding (NCF)
        users.insert(0, "user_id", np.arange(1, n_users + 1, dtype=np.int32))
        features.append(SparseFeature("user_id", n_users + 1, "user"))
    schema = Schema((
        *features,
        SparseFeature("region", n_clusters, "user"),
        SparseFeature("age_bucket", 7, "user"),
        SparseFeature("gender", 2, "user"),
        SequenceFeature("hist_item_id", n_items + 1, history_maxlen, "history", embedding_name="item_id",
                        length_name="hist_length"),
        SparseFeature("item_id", n_items + 1, "item"),
        SequenceFeature("categories", n_clusters + 1, 2, "item"),
        DenseFeature("log_price", "item"),
    ))
    ds = InteractionDataset(
        name="synthetic",
        events=events,
        users=users,
        items=items,
        schema=schema,
        item_sequences={"categories": categories},
        description=(
            f"synthetic: {n_users} users in {n_clusters} taste clusters, {n_items} items (zipf {zipf}), "
            f"~{events_per_user:g} events/user, click rate ~{click_rate:g}, seed {seed}"
        ),
        source="generated",
    )
    if split == "leave-one-out":
        ds = leave_one_out(ds, min_interactions, seed=seed, order="timestamp")
    return ds


def _check(ok: bool, name: str, value, rule: str) -> None:
    if not ok:
        raise ValueError(f"synthetic: {name} must be {rule}, got {value!r}")


#: a pure function of its options and rf2's code: ``rf2.data.cache`` may keep its output on disk
make_synthetic.cacheable = True
