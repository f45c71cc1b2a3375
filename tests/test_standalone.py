"""Standalone training (rf2.standalone): against a plain per-client loop, and independent of how
clients are grouped."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from optimizations import make_contexts, parse_optimization
from rf2.clients.batch import RoundBatch
from rf2.config import RunConfig
from rf2.data import FeatureEncoder
from rf2.evaluation import tier_metrics
from rf2.evaluation.ranking import ranking_by_user, ranking_frame
from rf2.simulation import Simulation

DS = {"n_users": 60, "n_items": 40, "events_per_user": 15, "user_id": True}


def oracle(sim: Simulation, make_opt, epochs: int, steps: int, k: int = 0, negatives: int = 0, redraw: bool = True):
    """Every client with training data: a copy of the initial model, ``epochs`` times a fresh
    torch optimiser taking ``steps`` full-batch BCE steps on the client's own events; then its
    test logits (and ranking) with that model. Clients without data keep the initial model.
    ``negatives``: the client's positives plus that many negatives per positive drawn with its seed
    of the epoch's round (its first-epoch group ``r``, round ``epoch * groups + r``), or with
    ``redraw=False`` the first epoch's draw every epoch."""
    ds, enc = sim.dataset, FeatureEncoder(sim.dataset)
    plan = sim.schedule()
    groups = [np.asarray(chosen) for _, chosen in plan[: plan.per_epoch]]
    group_of = {int(c): r for r, g in enumerate(groups) for c in g}
    init = copy.deepcopy(sim.model)
    test = ds.test_index
    logits = np.zeros(test.size, dtype=np.float32)
    per_user = []
    for c in range(ds.n_users):
        m = copy.deepcopy(init)
        m.eval()
        if ds.train_counts[c] > 0:
            X, y = RoundBatch.gather(ds, enc, np.array([c])).client(0) if not negatives else (None, None)
            for e in range(epochs):
                if negatives and (redraw or e == 0):
                    round_ = (e if redraw else 0) * len(groups) + group_of[c]
                    (ctx,) = make_contexts(sim.train_seed, np.array([c]), sim.tiers.tier, sim.tiers.names, round_, e,
                                           ds.train_counts[[c]])
                    X, y = RoundBatch.gather(ds, enc, np.array([c]), negatives=negatives, seeds=[ctx.seed]).client(0)
                opt = make_opt(m.parameters())
                for _ in range(steps):
                    opt.zero_grad()
                    F.binary_cross_entropy_with_logits(m(X), y).backward()
                    opt.step()
        with torch.no_grad():
            mine = np.flatnonzero(ds.user[test] == c)
            if mine.size:
                logits[mine] = m(enc.encode(test[mine])).numpy()
            if k:
                per_user.append(ranking_by_user(m, ds, enc, k, users=[c]))
    users = ds.user[test]
    metrics = tier_metrics(ds.label[test], logits, sim.tiers.tier[users], users, sim.tiers.names).frame
    if k:
        metrics = pd.concat([metrics, ranking_frame(pd.concat(per_user), sim.tiers.tier, sim.tiers.names)])
    return metrics.set_index(["tier", "metric"])["value"]


def quality(result) -> pd.Series:
    f = result.metrics.frame
    f = f[f.metric.isin(["auc", "log_loss"]) | f.metric.str.contains("@")]
    return f.set_index(["tier", "metric"])["value"]


@pytest.mark.parametrize("engine", ["batched", "reference"])
def test_standalone_dlrm_sgd_equals_a_plain_loop(engine):
    cfg = RunConfig(dataset="synthetic", dataset_options={k: v for k, v in DS.items() if k != "user_id"},
                    optimization="standalone", clients_per_round=16, epochs=2, local_steps=2, client_lr=0.5, engine=engine)
    sim = Simulation(cfg, progress=False)
    want = oracle(sim, lambda p: torch.optim.SGD(p, lr=0.5), epochs=2, steps=2)
    got = quality(sim.run())
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), atol=2e-5, rtol=1e-4, check_names=False)
    # and it is not plain FedAvg (the oracle can tell them apart)
    fed = quality(Simulation(cfg.replace(optimization="none"), progress=False).run())
    assert (fed.sort_index() - want.sort_index()).abs().max() > 1e-3


def test_standalone_ncf_adam_with_ranking_equals_a_plain_loop():
    """NCF's private user table, Adam with its state reset every round, NDCG/Recall per tier."""
    cfg = RunConfig(dataset="synthetic", dataset_options=DS, model="ncf", optimization="standalone",
                    clients_per_round=20, epochs=3, local_steps=2, client_optimizer="adam", client_lr=0.05, ranking_k=5)
    sim = Simulation(cfg, progress=False)
    want = oracle(sim, lambda p: torch.optim.Adam(p, lr=0.05), epochs=3, steps=2, k=5)
    got = quality(sim.run())
    assert set(got.index) == set(want.index)
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), atol=1e-4, rtol=1e-4, check_names=False)


@pytest.mark.parametrize("engine", ["batched", "reference"])
def test_standalone_with_negatives_redrawn_every_epoch_equals_a_plain_loop(engine):
    """HeteFedRec §V-A's protocol for Standalone: positives only, 1:k negatives re-drawn each epoch
    (so a client's touched item rows change between epochs and it must keep all of them)."""
    from rf2.data import load_dataset

    ds = load_dataset("synthetic", n_users=40, n_items=400, events_per_user=12, seed=3, split="leave-one-out",
                      user_id=True, min_interactions=5)
    cfg = RunConfig(dataset="synthetic", model="ncf", optimization="standalone", clients_per_round=12, epochs=3,
                    local_steps=2, client_optimizer="adam", client_lr=0.05, train_negatives=3, ranking_k=5, engine=engine)
    sim = Simulation(cfg, dataset=ds, progress=False)
    make = lambda p: torch.optim.Adam(p, lr=0.05)  # noqa: E731
    want = oracle(sim, make, epochs=3, steps=2, k=5, negatives=3)
    got = quality(sim.run())
    assert set(got.index) == set(want.index)
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), atol=1e-4, rtol=1e-4, check_names=False)
    # the oracle can tell re-drawn negatives from one fixed draw
    fixed = oracle(sim, make, epochs=3, steps=2, k=5, negatives=3, redraw=False)
    assert (fixed.sort_index() - want.sort_index()).abs().max() > 1e-3


def test_grouping_does_not_matter_and_nothing_is_uploaded():
    """Clients are independent: training them 7 or 25 at a time gives the same result (HeteFedRec
    sizes, dual-task loss and DDR included)."""
    base = RunConfig(dataset="synthetic", dataset_options=DS, model="hetencf", model_options={"sizes": [4, 8, 16]},
                     optimization="hetefedrec:4,8,16:standalone=on", epochs=2, client_lr=0.5, ranking_k=5)
    a = Simulation(base.replace(clients_per_round=7), progress=False).run()
    b = Simulation(base.replace(clients_per_round=25), progress=False).run()
    pd.testing.assert_series_equal(quality(a).sort_index(), quality(b).sort_index(), atol=1e-5, check_names=False)
    up = a.metrics.frame.query("metric == 'upload_mb'")["value"]
    assert (up == 0).all()
    assert a.metrics.frame.query("metric == 'participations' and tier == 'overall'")["value"].item() == 2 * 60
    assert (a.rounds["upload_mb"] == 0).all() and len(a.rounds) == 2 * int(np.ceil(60 / 7))


def test_standalone_refuses_what_does_not_apply():
    """(Re-drawn training negatives are supported: see the test above.)"""
    with pytest.raises(ValueError, match="no server rounds to stop after; set max_rounds = 0"):
        Simulation(RunConfig(dataset="synthetic", dataset_options={"n_users": 30}, optimization="standalone",
                             max_rounds=2), progress=False).run()
    with pytest.raises(ValueError, match="nothing is aggregated, so agg and exclusive do not apply"):
        parse_optimization("hetefedrec:8,16,32:standalone=on:exclusive=on")
    with pytest.raises(ValueError, match="'standalone' takes no arguments"):
        parse_optimization("standalone:2")
