"""Fed-LightGCN (``lightgcn``, ``hetelightgcn``; rf2.models.lightgcn): the local-graph propagation by
hand, batched engine == reference engine, the private user embedding, short simulations."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from optimizations import make_contexts, parse_optimization
from rf2.clients.batch import RoundBatch
from rf2.clients.batched import BatchedEngine
from rf2.clients.local import LocalTraining
from rf2.clients.optim import ClientOptimizer
from rf2.clients.reference import ReferenceEngine
from rf2.config import RunConfig
from rf2.data import FeatureEncoder, InteractionDataset, make_synthetic
from rf2.data.schema import Schema, SparseFeature
from rf2.models import build_model
from rf2.simulation import Simulation
from tier_mapping import map_tiers

DS_OPTS = {"n_users": 120, "n_items": 50, "events_per_user": 14, "seed": 5, "user_id": True}
SIZES = [4, 8, 16]


@pytest.fixture(scope="module")
def ds():
    return make_synthetic(**DS_OPTS)


# -- a tiny graph, by hand ---------------------------------------------------------------------------
def tiny_dataset() -> InteractionDataset:
    """Users 0, 1, 2 (user_id rows 1, 2, 3), items 0..3 (item_id rows 1..4).

    * user 0: training positive item row 2, training negative row 4, test positive row 3;
    * user 1: training positives rows 1, 2, 3, 4, and row 2 clicked a second time;
    * user 2: a training negative (row 1), a test positive (row 4): no training positive.
    """
    ev = pd.DataFrame(
        [  # user, item (index), label, timestamp, is_test
            (0, 1, 1, 0, False), (0, 3, 0, 1, False), (0, 2, 1, 2, True),
            (1, 0, 1, 0, False), (1, 1, 1, 1, False), (1, 2, 1, 2, False), (1, 3, 1, 3, False), (1, 1, 1, 4, False),
            (2, 0, 0, 0, False), (2, 3, 1, 1, True),
        ],
        columns=["user", "item", "label", "timestamp", "is_test"],
    )
    schema = Schema((SparseFeature("user_id", 4, "user"), SparseFeature("item_id", 5, "item")))
    return InteractionDataset("tiny", ev, pd.DataFrame({"user_id": [1, 2, 3]}), pd.DataFrame({"item_id": [1, 2, 3, 4]}),
                              schema)


U = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]  # user table rows 0..3
V = [[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, 4.0], [1.0, -1.0]]  # item table rows 0..4


def tiny_model(name="lightgcn", **opts):
    tiny = tiny_dataset()
    model = build_model(name, tiny.schema, seed=0, **({"embedding_dim": 2} if name == "lightgcn" else {}), **opts)
    with torch.no_grad():
        model.embedding_dict["user_id"].weight.copy_(torch.tensor(U))
        if name == "lightgcn":
            model.embedding_dict["item_id"].weight.copy_(torch.tensor(V))
    model.bind_dataset(tiny)
    return tiny, model


def rows(pairs):
    """Input rows for (user_id row, item_id row) pairs of the tiny schema."""
    return torch.tensor(pairs, dtype=torch.float32)


def head(model, u, v):
    h = torch.cat([u, v], 1)
    for lin in model.ffn:
        h = torch.relu(h @ lin.weight.T + lin.bias)
    return (h @ model.out.weight.T + model.out.bias).squeeze(-1)


def test_local_graphs_of_the_tiny_dataset():
    tiny, model = tiny_model()
    # CSR by user row: row 1 -> {2}, row 2 -> {1, 2, 3, 4} (the repeated click once), row 3 -> {}
    assert model.graph_ptr.tolist() == [0, 0, 1, 5, 5]
    assert model.graph_items.tolist() == [2, 1, 2, 3, 4]


def test_propagation_by_hand():
    """One layer on each user's star, normalisation 1/sqrt(n_i) (items have degree 1), mean of layers 0, 1:

    user row 1: N = {2}, n = 1:          e1 = v2 / 1 = [2, 0];  ũ = ½([1, 0] + [2, 0]) = [1.5, 0]
    user row 2: N = {1, 2, 3, 4}, n = 4: e1 = ([1,1] + [2,0] + [0,4] + [1,-1]) / sqrt(4) = [4, 4] / 2 = [2, 2];
                                         ũ = ½([0, 2] + [2, 2]) = [1, 2]
    user row 3: N = {}, n = 0:           e1 = 0;                ũ = ½ [3, 3] = [1.5, 1.5]
    Items are scored with v_j (default)."""
    _, model = tiny_model()
    X = rows([[1, 2], [1, 4], [1, 3], [2, 3], [2, 1], [3, 1], [3, 4]])
    u, v = model.representations(X)
    want_u = torch.tensor([[1.5, 0.0]] * 3 + [[1.0, 2.0]] * 2 + [[1.5, 1.5]] * 2)
    assert torch.allclose(u, want_u)
    assert torch.allclose(v, torch.tensor([V[2], V[4], V[3], V[3], V[1], V[1], V[4]]))
    with torch.no_grad():
        assert torch.allclose(model(X), head(model, want_u, v))


def test_item_propagation_by_hand():
    """``item_propagation=True``: ṽ_j = ½(v_j + [j ∈ N_i] u_i / sqrt(n_i)):

    user row 1 (u = [1, 0], n = 1): item 2 ∈ N: ½([2, 0] + [1, 0]) = [1.5, 0]; item 4 (a negative) ∉ N:
        ½ [1, -1] = [0.5, -0.5]; item 3 (test, not training) ∉ N: ½ [0, 4] = [0, 2]
    user row 2 (u = [0, 2], n = 4): item 3 ∈ N: ½([0, 4] + [0, 2] / 2) = [0, 2.5]
    user row 3 (n = 0): item 1: ½ [1, 1] = [0.5, 0.5]"""
    _, model = tiny_model(item_propagation=True)
    X = rows([[1, 2], [1, 4], [1, 3], [2, 3], [3, 1]])
    u, v = model.representations(X)
    assert torch.allclose(v, torch.tensor([[1.5, 0.0], [0.5, -0.5], [0.0, 2.0], [0.0, 2.5], [0.5, 0.5]]))
    assert torch.allclose(u, torch.tensor([[1.5, 0.0]] * 3 + [[1.0, 2.0], [1.5, 1.5]]))


def test_training_reads_the_graph_from_the_batch():
    """client_loss's graph (the batch's positives) == the bound graph on a full batch, for every
    client of the tiny dataset, with both item sides; and the loss is the mean BCE of those logits."""
    for opts in ({}, {"item_propagation": True}):
        tiny, model = tiny_model(**opts)
        enc = FeatureEncoder(tiny)
        batch = RoundBatch.gather(tiny, enc, np.array([0, 1, 2]))
        params = {k: p.detach() for k, p in model.named_parameters()}
        for c in range(3):
            X, y = batch.client(c)
            w = torch.full_like(y, 1 / y.numel())
            with torch.no_grad():
                bound = model(X)
                from_batch = model(X, edges=(y > 0.5).float())
                loss = model.client_loss(params, X, y, w)
            assert torch.allclose(bound, from_batch), (opts, c)
            assert float(loss) == pytest.approx(float(F.binary_cross_entropy_with_logits(bound, y)), rel=1e-6)
        # the graph really is the batch's: drop user 1's positive item rows 3, 4 from its batch
        X, y = batch.client(1)
        keep = X[:, 1] <= 2
        u, _ = model.representations(X[keep], edges=(y[keep] > 0.5).float())
        # N = {1, 2}, n = 2: ũ = ½([0, 2] + ([1, 1] + [2, 0]) / sqrt(2))
        want = 0.5 * (torch.tensor([0.0, 2.0]) + torch.tensor([3.0, 1.0]) / 2**0.5)
        assert torch.allclose(u, want.expand_as(u))


def test_hetero_propagates_in_each_table():
    """hetelightgcn, sizes (1, 2): pair (x, h) feeds Θ_h with ũ_x[:N_h], ũ_x = ½(u[:N_x] + Σ V_x[N] / sqrt(n)).
    User row 2 (u = [0, 2], N = {1, 2, 3, 4}, n = 4), item row 3:
    table 0 (V_0 = [0, 3, 1, 1, 3] as one column): ũ_0 = ½(0 + (3+1+1+3)/2) = 2, ṽ_0 = 1
    table 1 (= V above):                          ũ_1 = [1, 2],                ṽ_1 = [0, 4]"""
    tiny = tiny_dataset()
    model = build_model("hetelightgcn", tiny.schema, seed=0, sizes=[1, 2], nested_init=False)
    with torch.no_grad():
        model.embedding_dict["user_id"].weight.copy_(torch.tensor(U))
        model.items[0].weight.copy_(torch.tensor([[0.0], [3.0], [1.0], [1.0], [3.0]]))
        model.items[1].weight.copy_(torch.tensor(V))
    model.bind_dataset(tiny)
    X = rows([[2, 3]])
    with torch.no_grad():
        got = model(X, pairs=[(0, 0), (1, 0), (1, 1)])
        want = torch.stack([model._head(0, torch.tensor([[2.0]]), torch.tensor([[1.0]])),
                            model._head(0, torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])),  # reads [:1]
                            model._head(1, torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]]))], 1)
        assert torch.allclose(got, want)
        assert not torch.allclose(got[:, 0], got[:, 1])  # the table matters (2 vs 1 in the user slot)
        assert torch.allclose(model(X), got[:, 2])  # every user is large until assigned


def test_single_size_hetero_equals_lightgcn(ds):
    """hetelightgcn with one size == lightgcn with the same weights (forward and client loss)."""
    a = build_model("lightgcn", ds.schema, seed=3, embedding_dim=8)
    b = build_model("hetelightgcn", ds.schema, seed=4, sizes=[8])
    a.bind_dataset(ds)
    b.bind_dataset(ds)
    rename = {"embedding_dict.user_id.weight": "embedding_dict.user_id.weight", "items.0.weight": "embedding_dict.item_id.weight"}
    pb = {k: dict(a.named_parameters())[rename.get(k, k.replace("heads.0.", ""))].detach() for k, _ in b.named_parameters()}
    enc = FeatureEncoder(ds)
    X = enc.encode(ds.test_index)
    with torch.no_grad():
        assert torch.allclose(a(X), functional_call(b, pb, (X,)), atol=1e-6)
    batch = RoundBatch.gather(ds, enc, np.array([3, 7]))
    Xc, yc = batch.client(1)
    w = torch.full_like(yc, 1 / yc.numel())
    pa = {k: p.detach() for k, p in a.named_parameters()}
    assert float(a.client_loss(pa, Xc, yc, w)) == pytest.approx(float(b.client_loss(pb, Xc, yc, w)), rel=1e-6)


def test_scoring_needs_bound_graphs_and_no_vmapped_indices(ds):
    model = build_model("lightgcn", ds.schema, seed=0)
    X = FeatureEncoder(ds).encode(ds.test_index[:4])
    with pytest.raises(ValueError, match="bind_dataset"):
        model(X)
    model.bind_dataset(ds)
    model(X)
    with pytest.raises(RuntimeError, match="under vmap"):
        vmap(lambda x: model(x))(X[None])


# -- engines ---------------------------------------------------------------------------------------
def _round(ds, n=12, seed=0):
    rng = np.random.default_rng(seed)
    clients = rng.choice(np.flatnonzero(ds.train_counts > 0), n, replace=False)
    ctx = make_contexts(0, clients, np.zeros(ds.n_users, dtype=np.int64), ("low", "mid", "high"), 0, 0, ds.train_counts[clients])
    return RoundBatch.gather(ds, FeatureEncoder(ds), clients), ctx


def _assert_equal_updates(ref, fast, atol):
    assert torch.allclose(ref.loss, fast.loss, atol=1e-6)
    assert set(ref.dense) == set(fast.dense) and set(ref.tables) == set(fast.tables)
    for k in ref.dense:
        assert torch.allclose(ref.dense[k], fast.dense[k], atol=atol, rtol=1e-4), k
    for k in ref.tables:
        assert torch.equal(ref.tables[k].ptr, fast.tables[k].ptr) and torch.equal(ref.tables[k].rows, fast.tables[k].rows), k
        assert torch.allclose(ref.tables[k].values, fast.tables[k].values, atol=atol, rtol=1e-4), k


@pytest.mark.parametrize("item_propagation", [False, True])
@pytest.mark.parametrize("local,optimizer", [
    (1, "sgd"), (3, "sgd"), (2, "adam"), (LocalTraining(epochs=2, batch_size=4), "sgd"),
])
def test_batched_equals_reference(ds, item_propagation, local, optimizer):
    model = build_model("lightgcn", ds.schema, seed=2, embedding_dim=8, item_propagation=item_propagation)
    batch, ctx = _round(ds)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    lr, atol = 0.5, 1e-6
    if optimizer == "adam":  # a larger ε: Adam amplifies float noise near zero gradients
        lr, optimizer, atol = 0.01, ClientOptimizer("adam", 0.01, eps=1e-4), 1e-5
    ref = ReferenceEngine().client_updates(model, params, batch, ctx, local, lr, optimizer=optimizer)
    fast = BatchedEngine().client_updates(model, params, batch, ctx, local, lr, optimizer=optimizer)
    _assert_equal_updates(ref, fast, atol)
    item = ref.tables["embedding_dict.item_id.weight"]
    assert item.values.abs().max() > 0 and ref.dense["out.weight"].abs().max() > 0


def test_positive_rows_learn_through_the_propagation(ds):
    """A client's positive item rows get the gradient of e^(1) as well: zero the head's item half
    (then only the propagation reaches V) and the positives' rows still move, the negatives' do not."""
    model = build_model("lightgcn", ds.schema, seed=2, embedding_dim=8)
    batch, ctx = _round(ds, n=6, seed=1)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    params["ffn.0.weight"][:, 8:] = 0.0
    ref = ReferenceEngine().client_updates(model, params, batch, ctx, 1, 0.5)
    fast = BatchedEngine().client_updates(model, params, batch, ctx, 1, 0.5)
    _assert_equal_updates(ref, fast, 1e-6)
    icol = ds.schema.columns["item_id"][0]
    t = ref.tables["embedding_dict.item_id.weight"]
    for c in range(batch.n_clients):
        X, y = batch.client(c)
        pos = set(X[y > 0.5, icol].long().tolist())
        rows_c = t.rows[t.ptr[c]:t.ptr[c + 1]].tolist()
        moved = {r for r, v in zip(rows_c, t.values[t.ptr[c]:t.ptr[c + 1]]) if v.abs().max() > 0}
        assert moved == pos, c


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_hetero_batched_equals_reference(ds, optimizer):
    model = build_model("hetelightgcn", ds.schema, seed=1, sizes=SIZES)
    model.bind_dataset(ds)
    opt = parse_optimization("hetefedrec:4,8,16:ddr=0.5")
    tiers = map_tiers(ds, "random", 3, seed=0)
    opt.setup(model, ds, tiers, 0)
    rng = np.random.default_rng(2)
    clients = np.concatenate([rng.choice(np.flatnonzero((opt.group == s) & (ds.train_counts > 0)), 3, replace=False)
                              for s in range(3)])
    batch = RoundBatch.gather(ds, FeatureEncoder(ds), clients)
    ctx = make_contexts(0, clients, tiers.tier, tiers.names, 0, 0, ds.train_counts[clients])
    la = opt.client_loss_args(ctx, model)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    lr, atol = 0.5, 1e-6
    if optimizer == "adam":
        lr, optimizer, atol = 0.01, ClientOptimizer("adam", 0.01, eps=1e-4), 1e-5
    ref = ReferenceEngine().client_updates(model, params, batch, ctx, 2, lr, loss_args=la, optimizer=optimizer)
    fast = BatchedEngine().client_updates(model, params, batch, ctx, 2, lr, loss_args=la, optimizer=optimizer)
    _assert_equal_updates(ref, fast, atol)
    for c in range(batch.n_clients):  # a size-x client trains its own table only
        x = int(opt.group[ctx[c].client_id])
        d = ref.client_dense(c)
        for s in range(3):
            assert (d[f"items.{s}.weight"].abs().max() > 0) == (s == x), (c, s)


# -- privacy and simulations ---------------------------------------------------------------------------
def _sim(ds, model="lightgcn", **kw):
    kw = {"clients_per_round": 30, "max_rounds": 2, **kw}
    cfg = RunConfig(dataset="synthetic", dataset_options=DS_OPTS, model=model, **kw)
    return Simulation(cfg, dataset=ds, tiers=map_tiers(ds, cfg.mapping, cfg.n_tiers, seed=0), progress=False)


def test_user_embedding_stays_private(ds):
    s = _sim(ds, max_rounds=1)
    key = "embedding_dict.user_id.weight"
    assert s.model.private_parameters() == {key}
    assert s.model.graph_bound  # the simulation bound its dataset
    seen = {}
    step = s.server.step

    def spy(params, update):
        seen.update(update)
        return step(params, update)

    s.server.step = spy
    before = s.params[key].clone()
    plan = s.schedule()
    epoch, chosen = plan[0]
    s.train_round(0, epoch, chosen)
    assert key not in seen and "embedding_dict.item_id.weight" in seen  # never aggregated
    user_rows = ds.users["user_id"].to_numpy()
    changed = (s.params[key] != before).any(1)
    assert set(torch.nonzero(changed).flatten().tolist()) == set(user_rows[chosen].tolist())  # kept by their clients


def test_short_simulations_give_finite_metrics(ds):
    """Two rounds, then test AUC/log loss and (lightgcn) full ranking: every scoring path reads the bound graphs."""
    for model, kw in (("lightgcn", {"ranking_k": 5}), ("hetelightgcn", {"model_options": {"sizes": SIZES},
                                                                        "optimization": "hetefedrec:4,8,16"})):
        r = _sim(ds, model, **kw).run()
        assert len(r.rounds) == 2 and np.isfinite(r.rounds["train_loss"]).all()
        f = r.metrics.frame
        scored = f[f["metric"].isin(["auc", "log_loss", "ndcg@5", "recall@5"])]
        assert len(scored) == (16 if model == "lightgcn" else 8) and np.isfinite(scored["value"]).all(), model
