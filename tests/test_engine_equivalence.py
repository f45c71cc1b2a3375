"""The batched engine equals the per-client reference loop (deterministic configurations)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rf2.clients.batch import RoundBatch
from rf2.clients.batched import BatchedEngine, plan_buckets
from rf2.clients.reference import ReferenceEngine
from rf2.data import FeatureEncoder
from rf2.models import build_model


def round_of(ds, n_clients, seed=0):
    rng = np.random.default_rng(seed)
    clients = rng.choice(np.flatnonzero(ds.train_counts > 0), n_clients, replace=False)
    return RoundBatch.gather(ds, FeatureEncoder(ds), clients)


def assert_same_updates(a, b, atol=1e-6):
    assert torch.allclose(a.weights, b.weights)
    assert torch.allclose(a.loss, b.loss, atol=1e-6)
    assert set(a.dense) == set(b.dense) and set(a.tables) == set(b.tables)
    for k in a.dense:
        assert torch.allclose(a.dense[k], b.dense[k], atol=atol, rtol=1e-4), k
    for k in a.tables:
        ta, tb = a.tables[k], b.tables[k]
        assert torch.equal(ta.ptr, tb.ptr) and torch.equal(ta.rows, tb.rows), k
        assert torch.allclose(ta.values, tb.values, atol=atol, rtol=1e-4), k


@pytest.mark.parametrize("local_steps", [1, 3])
@pytest.mark.parametrize("dataset", ["synth", "ml100k"])
def test_batched_equals_reference(request, dataset, local_steps):
    ds = request.getfixturevalue(dataset)
    batch = round_of(ds, 24)
    model = build_model("dlrm", ds.schema, seed=2)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    ref = ReferenceEngine().client_updates(model, params, batch, [None] * batch.n_clients, local_steps, 1.0)
    fast = BatchedEngine(slack=0.1).client_updates(model, params, batch, [None] * batch.n_clients, local_steps, 1.0)
    assert_same_updates(ref, fast)
    # the round changed something: a test that can fail
    assert any(v.abs().max() > 0 for v in ref.dense.values())


def test_batched_equals_reference_with_masks(synth):
    batch = round_of(synth, 10, seed=3)
    model = build_model("dlrm", synth.schema, seed=2)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    name = "top.linears.0.weight"
    g = torch.Generator().manual_seed(0)
    masks = {name: torch.rand((10, *params[name].shape), generator=g) > 0.5}
    ref = ReferenceEngine().client_updates(model, params, batch, [None] * 10, 2, 1.0, masks)
    fast = BatchedEngine().client_updates(model, params, batch, [None] * 10, 2, 1.0, masks)
    assert_same_updates(ref, fast)
    assert (ref.dense[name][~masks[name]] == 0).all()


def test_untouched_rows_have_zero_update(synth):
    """What TableRows leaves out really is zero in the reference's dense update."""
    batch = round_of(synth, 5, seed=4)
    model = build_model("dlrm", synth.schema, seed=2)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    X, y = batch.client(0)
    local = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    from rf2.clients.reference import client_loss

    grads = dict(zip(local, torch.autograd.grad(client_loss(model, local, X, y), list(local.values()))))
    ref = ReferenceEngine().client_updates(model, params, batch, [None] * 5, 1, 1.0)
    for k, t in ref.tables.items():
        dense_delta = -grads[k]
        assert torch.allclose(t.to_dense(0), dense_delta, atol=1e-7), k


def test_buckets_cover_every_client_once_and_bound_padding():
    counts = np.random.default_rng(0).integers(1, 500, 300)
    buckets = plan_buckets(counts, slack=0.2)
    flat = np.concatenate(buckets)
    assert sorted(flat.tolist()) == list(range(300))
    for b in buckets:
        c = counts[b]
        assert len(b) == 1 or len(b) * c.max() <= 1.2 * c.sum() + 1e-9


@pytest.mark.parametrize("with_masks", [False, True])
def test_summed_shortcut_equals_fedavg_of_reference(synth, with_masks):
    """The batched engine's direct aggregate (linear optimisations, one step) == FedAvg of the loop."""
    from rf2.aggregation import RowUpdate, fedavg

    batch = round_of(synth, 12, seed=5)
    model = build_model("dlrm", synth.schema, seed=2)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    masks = None
    if with_masks:  # three sub-model groups, as Channel makes
        from optimizations import Channel, ClientContext

        ctxs = [ClientContext(int(c), i % 3, ("low", "mid", "high")[i % 3], 0, 0, 1, i) for i, c in enumerate(batch.clients)]
        masks = Channel("c", (0.25, 0.5, 1.0)).client_masks(ctxs, model)
    ref = fedavg(ReferenceEngine().client_updates(model, params, batch, [None] * 12, 1, 0.7, masks))
    fast_u = BatchedEngine().client_updates(model, params, batch, [None] * 12, 1, 0.7, masks, summed=True)
    assert fast_u.summed is not None and not fast_u.dense
    fast = fedavg(fast_u)
    assert set(ref) == set(fast)
    for k in ref:
        if isinstance(ref[k], RowUpdate):
            assert torch.equal(ref[k].rows, fast[k].rows), k
            assert torch.allclose(ref[k].values, fast[k].values, atol=1e-7), k
        else:
            assert torch.allclose(ref[k], fast[k], atol=1e-7), k
    per_client = BatchedEngine().client_updates(model, params, batch, [None] * 12, 1, 0.7, masks)
    assert torch.allclose(fast_u.loss, per_client.loss, atol=1e-6)
    assert torch.equal(fast_u.entry_counts(), per_client.entry_counts())


@pytest.mark.parametrize("dataset,model,opts", [
    ("synth", "dlrm", {}), ("ml100k", "dlrm", {}), ("synth", "dlrm", {"top_hidden": (32, 16), "bottom_hidden": (8,)}),
])
def test_flat_path_equals_vmap_and_reference(request, dataset, model, opts):
    ds = request.getfixturevalue(dataset)
    batch = round_of(ds, 40, seed=5)
    m = build_model(model, ds.schema, seed=3, **opts)
    params = {k: p.detach().clone() for k, p in m.named_parameters()}
    ctx = [None] * batch.n_clients
    ref = ReferenceEngine().client_updates(m, params, batch, ctx, 1, 0.7)
    vm = BatchedEngine(flat=False).client_updates(m, params, batch, ctx, 1, 0.7)
    # the per-client weight sums both ways: padded buckets (a tiny cell budget forces many), and one
    # matrix product per client on its own samples
    for eng in (BatchedEngine(flat=True, max_cells=500, loop_min_mean=float("inf")), BatchedEngine(flat=True, loop_min_mean=0)):
        flat = eng.client_updates(m, params, batch, ctx, 1, 0.7)
        assert_same_updates(ref, flat)
        assert_same_updates(vm, flat)
    assert all(v.abs().max() > 0 for k, v in ref.dense.items() if k.endswith("weight"))


def test_flat_path_is_taken_only_where_it_is_exact(synth, monkeypatch):
    batch = round_of(synth, 8)
    m = build_model("dlrm", synth.schema, seed=1)
    params = {k: p.detach().clone() for k, p in m.named_parameters()}
    used = []
    real = BatchedEngine.flat_updates
    monkeypatch.setattr(BatchedEngine, "flat_updates", lambda self, *a, **k: used.append(1) or real(self, *a, **k))
    eng = BatchedEngine()
    eng.client_updates(m, params, batch, [None] * 8, 1, 1.0)
    assert used == [1]
    eng.client_updates(m, params, batch, [None] * 8, 2, 1.0)  # several local steps: vmap
    masks = {"top.linears.0.weight": torch.ones((8, *params["top.linears.0.weight"].shape), dtype=torch.bool)}
    eng.client_updates(m, params, batch, [None] * 8, 1, 1.0, masks)  # sub-models: vmap
    assert used == [1]


@pytest.mark.parametrize("engine", [ReferenceEngine, BatchedEngine])
def test_loss_arguments_for_a_model_without_its_own_loss_are_refused(synth, engine):
    batch = round_of(synth, 4)
    m = build_model("dlrm", synth.schema, seed=0)
    params = {k: p.detach().clone() for k, p in m.named_parameters()}
    with pytest.raises(ValueError, match=r"\['size'\] given, but model DLRM has no client_loss"):
        engine().client_updates(m, params, batch, [None] * 4, 1, 1.0, loss_args={"size": torch.zeros(4)})


@pytest.mark.parametrize("name", ["dlrm", "din"])
def test_summed_shortcut_on_the_touched_rows_equals_it_on_whole_tables(synth, name, monkeypatch):
    """Training only the rows a round indexes (tables_read_by_index_only) gives exactly the
    update of differentiating the whole tables: the same rows, the same values bit for bit."""
    from rf2.aggregation import RowUpdate

    batch = round_of(synth, 12, seed=7)
    model = build_model(name, synth.schema, seed=3)
    assert type(model).tables_read_by_index_only
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    before = {k: v.clone() for k, v in params.items()}
    rows = BatchedEngine().client_updates(model, params, batch, [None] * 12, 1, 0.7, summed=True)
    monkeypatch.setattr(type(model), "tables_read_by_index_only", False)
    whole = BatchedEngine().client_updates(model, params, batch, [None] * 12, 1, 0.7, summed=True)
    assert set(rows.summed) == set(whole.summed) and rows.shapes == whole.shapes
    subsets = []
    for k, u in whole.summed.items():
        if isinstance(u, RowUpdate):
            assert torch.equal(rows.summed[k].rows, u.rows) and torch.equal(rows.summed[k].values, u.values), k
            subsets.append(u.rows.numel() < params[k].shape[0])
        else:
            assert torch.equal(rows.summed[k], u), k
    assert len(subsets) >= 2 and any(subsets)  # the item table is a real subset
    assert torch.equal(rows.loss, whole.loss)
    assert all(torch.equal(params[k], before[k]) for k in params)  # the model's tables were not touched


@pytest.mark.parametrize("key_range,n_keys,sorts", [(50, 400, False), (5_000, 300, False), (10_000_000, 2_000, True),
                                                    (3_000_000, 1, False)])
def test_unique_keys_equals_torch_unique(key_range, n_keys, sorts, monkeypatch):
    """The marking path of the flat engine's (client, row) numbering gives torch.unique's values
    and inverse exactly, with repeated keys, the range's ends, and on ranges where it falls back
    to the sort; and the sort fallback is what large ranges take."""
    import rf2.clients.batched as batched

    g = torch.Generator().manual_seed(key_range + n_keys)
    keys = torch.cat([torch.randint(0, key_range, (n_keys,), generator=g), torch.tensor([0, key_range - 1, 0])])
    want_u, want_inv = torch.unique(keys, return_inverse=True)
    u, inv = batched.unique_keys(keys, key_range)
    assert u.dtype == torch.long and inv.dtype == torch.long
    assert torch.equal(u, want_u) and torch.equal(inv, want_inv)
    sorted_calls = []
    real = torch.unique
    monkeypatch.setattr(batched.torch, "unique", lambda *a, **k: sorted_calls.append(1) or real(*a, **k))
    batched.unique_keys(keys, key_range)
    assert sorted_calls == ([1] if sorts else [])
    if not sorts:  # the marking path refuses keys outside the range instead of answering wrongly
        with pytest.raises(ValueError, match="keys must lie in"):
            batched.unique_keys(torch.cat([keys, torch.tensor([key_range])]), key_range)
        with pytest.raises(ValueError, match="keys must lie in"):
            batched.unique_keys(torch.cat([keys, torch.tensor([-1])]), key_range)
