"""FedEM (issue 13 §4): merge by hand, the batched client training equals the per-client
reference (torch.optim.Adam, as the authors' code), the personalised round's bookkeeping, and
the spec's errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from optimizations import make_contexts, parse_optimization
from rf2.clients.fedem import ClientModels, FedEMTraining, merge, scores, train_batched, train_reference
from rf2.clients.local import LocalTraining
from rf2.config import RunConfig
from rf2.data import load_dataset
from rf2.models.fcf import adapter_rho
from rf2.personalised import GStore, memory_needed
from rf2.simulation import Simulation


@pytest.fixture(scope="module")
def loo():
    return load_dataset("synthetic", n_users=60, n_items=400, events_per_user=15, seed=2, split="leave-one-out", user_id=True,
                        min_interactions=10)


def fedem_config(**kw):
    base = dict(dataset="synthetic", dataset_options={"n_users": 60, "n_items": 400, "events_per_user": 15, "seed": 2, "user_id": True,
                                                      "split": "leave-one-out", "min_interactions": 10},
                model="fcf", model_options={"embedding_dim": 4, "adapter": [8, 4, 1]}, optimization="fedem:agg_ratio=0.25",
                clients_per_round=31, epochs=4, local_epochs=2, local_batch_size=16, train_negatives=4,
                client_optimizer="adam", client_lr=0.1, sampled_k=10)
    base.update(kw)
    return RunConfig(**base)


def test_merge_by_hand():
    Q = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    G = torch.tensor([[[2.0, 4.0], [3.0, -1.0]]])
    out = merge(Q, G, [], rho=0.25)
    assert torch.allclose(out, torch.tensor([[[0.5, 1.0], [1.5, 0.5]]]))
    assert torch.equal(merge(Q, G, [], rho=1.0), G)  # static replacement
    assert torch.equal(merge(Q, G, [], rho=0.0), Q)  # purely local


def test_adapter_rho_equals_the_mlp_written_with_nn_modules():
    torch.manual_seed(0)
    d = 3
    mlp = nn.Sequential(nn.Linear(2 * d, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 1), nn.Sigmoid())
    ql, g = torch.randn(7, d), torch.randn(7, d)
    want = mlp(torch.cat([ql, g - ql], dim=1)).squeeze(-1)
    weights = [p.detach()[None] for p in mlp.parameters()]
    got = adapter_rho(weights, ql[None], g[None])[0]
    assert torch.allclose(got, want, atol=1e-6)


def _round_inputs(loo, n_clients=12, holders=5, seed=0):
    from rf2.clients.batch import RoundBatch
    from rf2.data import FeatureEncoder
    from rf2.models import build_model

    model = build_model("fcf", loo.schema, seed=1, embedding_dim=4, adapter=[8, 4, 1])
    rng = np.random.default_rng(seed)
    clients = np.sort(rng.choice(loo.n_users, n_clients, replace=False))
    contexts = make_contexts(3, clients, np.zeros(loo.n_users, dtype=np.int64), ["t"], 1, 0,
                             loo.train_counts[clients] * 5)
    batch = RoundBatch.gather(loo, FeatureEncoder(loo), clients, negatives=4, seeds=[c.seed for c in contexts])
    n, d = model.embedding_dict[model.item_feature.table].weight.shape
    g = torch.Generator().manual_seed(seed)
    N = n_clients + 3  # the models hold more users than the round's clients, in another order
    models = ClientModels(torch.randn(N, d, generator=g), torch.randn(N, n, d, generator=g),
                          [p.detach().expand(N, *p.shape).clone() for k, p in model.named_parameters()
                           if k.startswith("adapter")])
    rows = torch.randperm(N, generator=g)[:n_clients]
    holder = torch.zeros(n_clients, dtype=torch.bool)
    holder[torch.randperm(n_clients, generator=g)[:holders]] = True
    G = torch.randn(holders, n, d, generator=g)
    return models, rows, G, holder, batch.X[:, model._icol].long(), batch.y.float(), batch.ptr, contexts


def _copy(m: ClientModels) -> ClientModels:
    return ClientModels(m.P.clone(), m.Q.clone(), [a.clone() for a in m.A])


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "tensor"])
@pytest.mark.parametrize("rho,merge_forward", [(None, True), (0.5, True), (1.0, False)])
def test_batched_client_training_equals_reference(loo, rho, merge_forward, compiled):
    models, rows, G, holder, items, labels, ptr, contexts = _round_inputs(loo)
    cfg = FedEMTraining(LocalTraining(epochs=4, batch_size=16, early_stop="cumulative_mean", threshold=0.1),
                        lr_embedding=0.05, lr_adapter=0.05, rho=rho, merge_forward=merge_forward, eps=1e-4)
    ref_models, fast_models = _copy(models), _copy(models)
    ref = (ref_models, *train_reference(ref_models, rows, G, holder, items, labels, ptr, contexts, cfg))
    fast = (fast_models, *train_batched(fast_models, rows, G, holder, items, labels, ptr, contexts, cfg, compiled=compiled))
    for a, b in zip(ref, fast):
        if isinstance(a, ClientModels):
            assert torch.allclose(a.P, b.P, atol=1e-4, rtol=1e-3)
            assert torch.allclose(a.Q, b.Q, atol=1e-4, rtol=1e-3)
            for x, y in zip(a.A, b.A):
                assert torch.allclose(x, y, atol=1e-4, rtol=1e-3)
        elif a.dtype == torch.long:
            assert torch.equal(a, b)
        else:
            assert torch.allclose(a, b, atol=1e-5)
    trained = ref[0]
    # tests that can fail: every client moved, users not in the round did not; only holders
    # trained their adapter (with the adapter); some clients stopped early, others did not
    assert (trained.P[rows] != models.P[rows]).any(1).all()
    others = torch.ones(models.P.shape[0], dtype=torch.bool)
    others[rows] = False
    assert torch.equal(trained.P[others], models.P[others]) and torch.equal(trained.Q[others], models.Q[others])
    moved = torch.stack([(x[rows] != y[rows]).flatten(1).any(1) for x, y in zip(trained.A, models.A)]).any(0)
    if rho is None:
        assert torch.equal(moved, holder)
    else:
        assert not moved.any()
    assert int(ref[2].min()) < int(ref[2].max())
    # rows no sample of a client touches are exactly unchanged (dense Adam from zero moments)
    for c in range(holder.numel()):
        u = int(rows[c])
        touched = torch.zeros(models.Q.shape[1], dtype=torch.bool)
        touched[items[ptr[c]:ptr[c + 1]]] = True
        assert torch.equal(trained.Q[u][~touched], models.Q[u][~touched])
        assert (trained.Q[u][touched] != models.Q[u][touched]).any()


@pytest.mark.parametrize("local", [LocalTraining(epochs=3, batch_size=16, early_stop="per_epoch", threshold=0.1),
                                   LocalTraining(epochs=2, batch_size=24, steps=2),
                                   LocalTraining(epochs=3, batch_size=0, early_stop="cumulative_mean", threshold=0.05)],
                         ids=["per_epoch", "two_steps", "full_batch"])
def test_compiled_and_tensor_paths_equal_reference_for_other_schedules(loo, local):
    models, rows, G, holder, items, labels, ptr, contexts = _round_inputs(loo, seed=4)
    cfg = FedEMTraining(local, lr_embedding=0.05, lr_adapter=0.02, eps=1e-4)
    ref_models = _copy(models)
    ref = train_reference(ref_models, rows, G, holder, items, labels, ptr, contexts, cfg)
    for compiled in (True, False):
        fast_models = _copy(models)
        fast = train_batched(fast_models, rows, G, holder, items, labels, ptr, contexts, cfg, compiled=compiled)
        assert torch.equal(ref[1], fast[1])  # epochs run
        assert torch.allclose(ref[0], fast[0], atol=1e-5)
        for a, b in [(ref_models.P, fast_models.P), (ref_models.Q, fast_models.Q), *zip(ref_models.A, fast_models.A)]:
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-3)
    assert not torch.allclose(ref_models.Q, models.Q)


def test_training_in_place_needs_contiguous_models(loo):
    models, rows, G, holder, items, labels, ptr, contexts = _round_inputs(loo, n_clients=3, holders=1)
    strided = ClientModels(models.P, models.Q.transpose(0, 1).contiguous().transpose(0, 1), models.A)
    cfg = FedEMTraining(LocalTraining(epochs=1, batch_size=8))
    with pytest.raises(ValueError, match="contiguous"):
        train_batched(strided, rows, G, holder, items, labels, ptr, contexts, cfg)


def test_scores_merge_holders_only():
    models = ClientModels(torch.tensor([[1.0, 0.0]] * 3), torch.zeros(3, 3, 2), [])
    G = torch.tensor([[[4.0, 0], [8.0, 0], [0, 0]], [[2.0, 0], [0, 0], [6.0, 0]]])  # clients 0 and 2, in order
    holder = torch.tensor([True, False, True])
    s = scores(models, G, holder, np.array([[0, 1], [0, 1], [0, 2]]), rho=0.5)
    assert np.allclose(s, [[2.0, 4.0], [0.0, 0.0], [1.0, 3.0]])
    # clients that are other rows of the models: client 0 is user 2, client 1 is user 0
    models = ClientModels(torch.tensor([[1.0, 0.0], [5.0, 5.0], [2.0, 0.0]]), torch.ones(3, 3, 2), [])
    s = scores(models, G[:1], torch.tensor([True, False]), np.array([[0, 1], [2, 0]]), rho=0.5, rows=torch.tensor([2, 0]))
    assert np.allclose(s, [[2.0 * 2.5, 2.0 * 4.5], [1.0, 1.0]])


def test_g_store_latest_replaces_keep_accumulates():
    latest, keep = GStore("latest"), GStore("keep")
    for s in (latest, keep):
        s.received([1, 2], torch.ones(2, 3, 2))
        s.received([2, 5], torch.stack([2 * torch.ones(3, 2), 3 * torch.ones(3, 2)]))
    h, G = latest.of(np.array([1, 2, 5]))
    assert h.tolist() == [False, True, True] and G.mean((1, 2)).tolist() == [2.0, 3.0]
    h, G = keep.of(np.array([5, 1, 2]))
    assert h.tolist() == [True, True, True] and G.mean((1, 2)).tolist() == [3.0, 1.0, 2.0]
    assert latest.of(np.array([1, 4]))[1] is None


def test_a_fedem_run_uploads_only_the_aggregated_tables_and_is_deterministic(loo):
    cfg = fedem_config(max_rounds=3)
    a = Simulation(cfg, dataset=loo, progress=False).run()
    b = Simulation(cfg, dataset=loo, progress=False).run()
    pd_a, pd_b = a.table(), b.table()
    assert pd_a.equals(pd_b)
    n_items = 401  # item table rows (index 0 = padding)
    agg = int(np.floor(31 * 0.25))
    assert np.allclose(a.rounds["upload_mb"], agg * n_items * 4 * 32 / 8e6)
    assert set(a.metrics.frame["metric"]) >= {"auc", "loo_hr@10", "loo_ndcg@10"}
    local_only = Simulation(cfg.replace(optimization="fedem:agg=none"), dataset=loo, progress=False).run()
    assert (local_only.rounds["upload_mb"] == 0).all()
    assert not local_only.table().equals(pd_a)


def test_select_by_test_is_flagged(loo):
    res = Simulation(fedem_config(max_rounds=3, valid_every=1, select_by="test"), dataset=loo, progress=False).run()
    f = res.metrics.frame
    assert f.loc[f["metric"] == "selected_on_test", "value"].tolist() == [1.0]
    rounds = res.rounds
    best = rounds["test_loo_hr@10"].max()
    chosen = int(f.loc[f["metric"] == "selected_round", "value"].iloc[0])
    assert rounds["test_loo_hr@10"][chosen] == best
    assert chosen == max(i for i in range(len(rounds)) if rounds["test_loo_hr@10"][i] == best)  # latest wins ties


def test_fedem_errors(loo):
    with pytest.raises(ValueError, match='needs model = "fcf"'):
        Simulation(fedem_config(model="ncf", model_options={}), dataset=loo, progress=False).run()
    with pytest.raises(ValueError, match="set train_negatives"), pytest.warns(UserWarning, match="no training negatives"):
        Simulation(fedem_config(train_negatives=0), dataset=loo, progress=False).run()
    with pytest.raises(ValueError, match="client_optimizer = 'adam'"):
        Simulation(fedem_config(client_optimizer="sgd"), dataset=loo, progress=False).run()
    with pytest.raises(ValueError, match="rho must be in \\[0, 1\\]"):
        parse_optimization("fedem:rho=2")
    with pytest.raises(ValueError, match="agg must be one of both\\|avg\\|sim\\|none"):
        parse_optimization("fedem:agg=mean")
    with pytest.raises(ValueError, match="unknown key 'alpah'"):
        parse_optimization("fedem:alpah=0.5")
    with pytest.raises(ValueError, match="personalised runs \\(fedem\\) only"):
        Simulation(fedem_config(optimization="none", valid_every=1, select_by="test"), dataset=loo, progress=False).run()


def test_memory_estimate_by_hand():
    # ML-100K: 943 tables of 1,683 x 16 floats + 5 working copies per participant + 2 x 94 G's
    table = 4 * 1683 * 16
    assert memory_needed(943, 1683, 16, 943, 94, False) == table * (943 + 5 * 943 + 188)
    assert memory_needed(943, 1683, 16, 943, 94, True) == table * (943 + 5 * 943 + 943)


def test_leave_one_out_auc_is_over_each_users_candidates(loo):
    """Any run of the protocol scores the same events: each user's test item (label 1) and its
    99 evaluation negatives; the AUC is the share of (positive, negative) pairs ranked right."""
    res = Simulation(fedem_config(optimization="none", model="ncf", model_options={}, max_rounds=1,
                                  local_epochs=1, local_batch_size=0), dataset=loo, progress=False).run()
    sc = res.scores
    n_users = int(np.unique(loo.user[loo.test_index]).size)
    assert sc.score.size == n_users * 100 and int(sc.label.sum()) == n_users
    pos, neg = sc.score[sc.label == 1], sc.score[sc.label == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    f = res.metrics.frame
    auc = float(f.loc[(f["tier"] == "overall") & (f["metric"] == "auc"), "value"].iloc[0])
    assert abs(auc - pairs) < 1e-9
