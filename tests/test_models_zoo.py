"""DIN (RF² §5.1) and the deepctr-torch model zoo under the RecModel contract.

For every new model, on the synthetic dataset and on a tiny MovieLens-shaped dataset (built by
the real MovieLens preprocessing from random raw frames): builds by name, finite logits of shape
[B], equal seeds -> equal weights, embedding tables are real parameters, the batched engine equals
the reference loop (with and without Channel masks), Channel's masked model equals the narrow
model. DIN's attention pooling is checked against a hand computation.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.func import functional_call

from optimizations import Channel, ClientContext
from rf2.clients.batched import BatchedEngine
from rf2.clients.reference import ReferenceEngine
from rf2.data import FeatureEncoder
from rf2.data.movielens import GENRES, OCCUPATIONS, RawMovieLens, build_movielens
from rf2.data.schema import Schema, SequenceFeature, SparseFeature
from rf2.models import MODELS, build_model
from rf2.models.zoo import ZOO, VmapSafeLinear

from test_engine_equivalence import assert_same_updates, round_of

ZOO_NAMES = sorted(ZOO)
NEW = ["din", *ZOO_NAMES]
WITH_DENSE = [n for n in NEW if n != "afm"]  # AFM takes no dense features (the synthetic data has one)
WITH_MLP = [n for n in NEW if n != "afm"]


@pytest.fixture(scope="module")
def tinyml():
    """MovieLens-100K's schema (3 user features, click history sharing the movie table, movie id,
    genres; no dense feature) on 40 random users x 30 movies, through ``build_movielens``."""
    rng = np.random.default_rng(0)
    n_users, n_items, n_events = 40, 30, 600
    pairs = rng.choice(n_users * n_items, n_events, replace=False)
    ratings = pd.DataFrame({
        "user_raw": pairs // n_items + 1, "item_raw": pairs % n_items + 1,
        "rating": rng.integers(1, 6, n_events), "timestamp": rng.integers(0, 10**6, n_events),
    })
    users = pd.DataFrame({
        "user_raw": np.arange(1, n_users + 1), "age": rng.integers(10, 70, n_users),
        "gender": rng.choice(["M", "F"], n_users), "occupation": rng.choice(OCCUPATIONS, n_users),
    })
    items = pd.DataFrame({
        "item_raw": np.arange(1, n_items + 1),
        "genres": [tuple(rng.choice(GENRES, rng.integers(1, 4), replace=False)) for _ in range(n_items)],
    })
    return build_movielens(RawMovieLens(ratings, users, items), "tiny-ml", click_threshold=4, history_maxlen=6)


def cases(names):
    return [(n, "synth") for n in names if n in WITH_DENSE] + [(n, "tinyml") for n in names]


def ctx(cid, tier):
    return ClientContext(cid, tier, ("low", "mid", "high")[tier], 0, 0, 10, cid)


# -- construction ---------------------------------------------------------------------------------
def test_every_new_model_is_registered():
    assert set(NEW) <= set(MODELS)


@pytest.mark.parametrize("name,dataset", cases(NEW))
def test_builds_by_name_with_finite_logits(request, name, dataset):
    ds = request.getfixturevalue(dataset)
    m = build_model(name, ds.schema, seed=0)
    X = FeatureEncoder(ds).encode(np.arange(64))
    with torch.no_grad():
        out = m(X)
    assert out.shape == (64,) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.std() > 0  # depends on the input


@pytest.mark.parametrize("name", NEW)
def test_same_seed_same_weights_other_seed_differs_global_rng_untouched(tinyml, name):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = build_model(name, tinyml.schema, seed=4)
    after = torch.rand(3)
    b = build_model(name, tinyml.schema, seed=4)
    c = build_model(name, tinyml.schema, seed=5)
    assert torch.equal(before, after)  # deepctr's BaseModel calls torch.manual_seed: it must not leak
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert pa.keys() == pb.keys() == pc.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
    assert any(not torch.equal(pa[k], pc[k]) for k in pa)


def test_direct_construction_does_not_reseed_the_global_rng(tinyml):
    """deepctr's BaseModel calls torch.manual_seed; built outside build_model too, construction
    only draws its deepctr seed from the global RNG (one draw) and builds under a forked RNG."""
    torch.manual_seed(7)
    torch.randint(0, 2**31 - 1, ())
    expected = torch.get_rng_state()
    torch.manual_seed(7)
    ZOO["deepfm"](tinyml.schema)
    assert torch.equal(torch.get_rng_state(), expected)


@pytest.mark.parametrize("name", NEW)
def test_embedding_tables_are_the_models_tables(tinyml, name):
    m = build_model(name, tinyml.schema, seed=0)
    params = dict(m.named_parameters())
    tables = m.embedding_tables()
    schema_tables = tinyml.schema.tables()
    assert set(tables) <= set(params)
    assert set(tables.values()) == set(schema_tables)
    for k, t in tables.items():
        assert params[k].shape[0] == schema_tables[t], k
    # nothing that is an embedding table is left out (it would be treated as a dense parameter)
    assert {k for k in params if "embedding_dict" in k} == set(tables)
    assert all(params[k].shape[1] == 16 for k in tables if ".linear_model." not in k)


@pytest.mark.parametrize("name", NEW)
def test_no_batch_coupling_and_no_buffers(tinyml, name):
    """No batch norm anywhere (a sample's output never depends on the rest of its batch, in train
    mode too) and no buffers that vmap would need batched."""
    m = build_model(name, tinyml.schema, seed=0)
    assert list(m.buffers()) == []
    X = FeatureEncoder(tinyml).encode(np.arange(40))
    m.train()
    with torch.no_grad():
        assert torch.allclose(m(X)[:5], m(X[:5]), atol=1e-6)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_returns_logits_not_probabilities(tinyml, name):
    m = build_model(name, tinyml.schema, seed=0)
    X = FeatureEncoder(tinyml).encode(np.arange(32))
    with torch.no_grad():
        m.net.out.bias.fill_(5.0)  # a sigmoid could never exceed 1
        logits = m(X)
        assert (logits > 1).all()
        m.net.out.task = "binary"  # deepctr's own prediction is the sigmoid of our logit
        assert torch.allclose(m.net(X).squeeze(-1), torch.sigmoid(logits), atol=1e-6)


@pytest.mark.parametrize("name", [n for n in ZOO_NAMES if n != "pnn"])
def test_vmap_safe_linear_part_equals_deepctrs(tinyml, name):
    m = build_model(name, tinyml.schema, seed=0)
    lin = m.net.linear_model
    assert isinstance(lin, VmapSafeLinear)
    with torch.no_grad():
        for p in lin.parameters():
            p.normal_()
        X = FeatureEncoder(tinyml).encode(np.arange(50))
        ours = lin(X)
        theirs = VmapSafeLinear.__mro__[1].forward(lin, X)  # deepctr-torch's Linear.forward
    assert ours.shape == (50, 1) and torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("name", NEW)
def test_vmap_over_parameters_with_a_shared_input(tinyml, name):
    """vmap over stacked parameters, one unbatched X (deepctr's own Linear fails here: it adds
    batched terms in place into an unbatched X.new_zeros)."""
    m = build_model(name, tinyml.schema, seed=0)
    X = FeatureEncoder(tinyml).encode(np.arange(30))
    g = torch.Generator().manual_seed(0)
    stacked = {k: torch.stack([p.detach(), p.detach() + 0.1 * torch.randn(p.shape, generator=g)])
               for k, p in m.named_parameters()}
    with torch.no_grad():
        out = torch.func.vmap(lambda p: functional_call(m, p, (X,)))(stacked)
        for i in range(2):
            one = functional_call(m, {k: v[i] for k, v in stacked.items()}, (X,))
            assert torch.allclose(out[i], one, atol=1e-5)


def test_refusals_are_clear(synth):
    with pytest.raises(ValueError, match="afm.*dense features.*log_price"):
        build_model("afm", synth.schema)
    no_history = Schema((SparseFeature("u", 3, "user"), SparseFeature("item", 5, "item")))
    with pytest.raises(ValueError, match="din.*no click-history feature"):
        build_model("din", no_history)
    with pytest.raises(ValueError, match="xdeepfm.*even"):
        build_model("xdeepfm", synth.schema, cin_layer_size=(5, 4))
    with pytest.raises(ValueError, match="autoint.*divisible"):
        build_model("autoint", synth.schema, att_head_num=3)
    with pytest.raises(ValueError, match="no option"):
        build_model("deepfm", synth.schema, dnn_dropout=0.5)


def test_channel_refuses_a_model_without_hidden_layers(tinyml):
    m = build_model("afm", tinyml.schema, seed=0)
    assert m.hidden_layers() == []
    with pytest.raises(ValueError, match="AFM declares no hidden layers"):
        Channel("c", (0.5, 1, 1)).client_masks([ctx(0, 0)], m)


# -- engines --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,dataset", cases(NEW))
def test_batched_equals_reference(request, name, dataset):
    """Two local steps on the synthetic data (the vmap path), one on tinyml (whichever path the
    batched engine picks for one step)."""
    ds = request.getfixturevalue(dataset)
    steps = 2 if dataset == "synth" else 1
    batch = round_of(ds, 10, seed=1)
    model = build_model(name, ds.schema, seed=2)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    ref = ReferenceEngine().client_updates(model, params, batch, [None] * batch.n_clients, steps, 1.0)
    fast = BatchedEngine(slack=0.1).client_updates(model, params, batch, [None] * batch.n_clients, steps, 1.0)
    assert_same_updates(ref, fast)
    assert set(ref.tables) == set(model.embedding_tables())  # tables travel as sparse rows
    assert all(t.values.abs().max() > 0 for t in ref.tables.values())  # the round changed something


@pytest.mark.parametrize("name", WITH_MLP)
def test_batched_equals_reference_with_channel_masks(synth, tinyml, name):
    ds = synth if name in WITH_DENSE else tinyml
    batch = round_of(ds, 9, seed=2)
    model = build_model(name, ds.schema, seed=2, **({"cin_layer_size": (16, 16)} if name == "xdeepfm" else {}))
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    contexts = [ctx(int(c), i % 3) for i, c in enumerate(batch.clients)]
    masks = Channel("c", (0.25, 0.5, 1.0)).client_masks(contexts, model)
    ref = ReferenceEngine().client_updates(model, params, batch, contexts, 2, 1.0, masks)
    fast = BatchedEngine().client_updates(model, params, batch, contexts, 2, 1.0, masks)
    assert_same_updates(ref, fast)
    for k, m in masks.items():
        assert (ref.dense[k][~m] == 0).all(), k  # a client never updates what it does not hold
    low = [i for i, c in enumerate(contexts) if c.tier == 0]
    assert any(not m[low[0]].all() for m in masks.values())


# -- Channel: the masked model is the narrow model ------------------------------------------------
NARROW = {
    "din": ({"att_hidden": (64, 16), "top_hidden": (256,)},
            lambda k: {"att_hidden": (k[0], k[1]), "top_hidden": (k[2],)}),
    **{n: ({"dnn_hidden": (32, 16)}, lambda k: {"dnn_hidden": (k[0], k[1])}) for n in WITH_MLP if n != "din"},
}


@pytest.mark.parametrize("width", [0.25, 0.5])
@pytest.mark.parametrize("name", sorted(NARROW))
def test_masked_model_equals_a_narrow_model(synth, tinyml, name, width):
    ds = synth if name in WITH_DENSE else tinyml
    full_opts, narrow_opts = NARROW[name]
    full = build_model(name, ds.schema, seed=0, **full_opts)
    with torch.no_grad():  # Dice's alpha starts at 0; make the negative side count
        for k, p in full.named_parameters():
            if k.endswith(".alpha"):
                p.uniform_(-1, 1)
    layers = full.hidden_layers()
    keep = [max(1, math.ceil(width * layer.width)) for layer in layers]
    narrow = build_model(name, ds.schema, seed=1, **narrow_opts(keep))
    sd = {k: v.clone() for k, v in full.state_dict().items()}
    for layer, k in zip(layers, keep):
        for p in layer.out_params:
            sd[p] = sd[p][:k]
        for p in layer.in_params:
            sd[p] = sd[p][:, :k]
    narrow.load_state_dict(sd)  # strict: the declared layers are exactly what narrowing changes
    masks = Channel("c", (width, 1, 1)).tier_masks(full, width)
    assert set(masks) == {p for layer in layers for p in layer.out_params + layer.in_params}
    params = {k: p.detach() * masks[k] if k in masks else p.detach() for k, p in full.named_parameters()}
    X = FeatureEncoder(ds).encode(np.arange(200))
    with torch.no_grad():
        a = functional_call(full, params, (X,))
        b = narrow(X)
        assert torch.allclose(a, b, atol=1e-5)
        assert not torch.allclose(a, full(X), atol=1e-4)  # and it differs from the full model


def test_din_channel_narrows_attention_and_top_mlp(synth):
    m = build_model("din", synth.schema, seed=0)
    assert [(layer.name, layer.width, layer.first) for layer in m.hidden_layers()] == [
        ("attention.0", 64, True), ("attention.1", 16, False), ("top.0", 256, True)]
    frac = Channel("c", (0.25, 0.5, 1.0)).compute_fraction([ctx(0, 0), ctx(1, 1), ctx(2, 2)], m)
    assert frac[0] < frac[1] < frac[2] == 1.0


# -- DIN ------------------------------------------------------------------------------------------
def test_din_follows_rf2(synth):
    m = build_model("din", synth.schema, seed=0)
    params = dict(m.named_parameters())
    att = "attention.local_att"
    assert params[f"{att}.dnn.linears.0.weight"].shape == (64, 4 * 16)  # [q, k, q-k, q*k]
    assert params[f"{att}.dnn.linears.1.weight"].shape == (16, 64)
    assert params[f"{att}.dense.weight"].shape == (1, 16)
    assert params["top.linears.0.weight"].shape[0] == 256 and params["out.weight"].shape == (1, 256)
    # top input: attention output + every non-history feature's embedding + the dense feature
    n_other = len(synth.schema.sparse) + len(synth.schema.sequences) - len(synth.schema.histories)
    assert params["top.linears.0.weight"].shape[1] == 16 + 16 * n_other + 1
    assert not m.attention.weight_normalization  # DIN's weights are not softmax-normalised
    assert not any("bn" in k for k in params)


def tiny_din():
    schema = Schema((
        SparseFeature("group", 3, "user"),
        SequenceFeature("hist_item", 7, 4, "history", embedding_name="item"),
        SparseFeature("item", 7, "item"),
    ))
    m = build_model("din", schema, seed=0, embedding_dim=4, embedding_init_std=0.5)
    with torch.no_grad():
        for k, p in m.named_parameters():
            if k.endswith(".alpha"):
                p.uniform_(-1, 1)
    rows = [  # group, hist_item (left-aligned, 0-padded), item
        [0, 1, 2, 0, 0, 3],
        [1, 0, 0, 0, 0, 5],  # empty history
        [2, 4, 4, 6, 1, 2],  # full history, a repeated click
        [1, 5, 0, 0, 0, 5],  # the candidate itself was clicked before
    ]
    return m, torch.tensor(rows, dtype=torch.float32)


def test_din_attention_pooling_equals_a_direct_computation():
    m, X = tiny_din()
    p = {k: v.detach() for k, v in m.named_parameters()}
    att = "attention.local_att"
    E = p["embedding_dict.item.weight"]

    def dice(s, alpha):
        g = torch.sigmoid(s)
        return g * s + (1 - g) * alpha * s

    expected, expected_w = torch.zeros(len(X), 4), torch.zeros(len(X), 4)
    for b, row in enumerate(X.long().tolist()):
        q = E[row[5]]
        for t, i in enumerate(row[1:5]):
            if i == 0:
                continue
            k = E[i]
            z = torch.cat([q, k, q - k, q * k])
            h = dice(p[f"{att}.dnn.linears.0.weight"] @ z + p[f"{att}.dnn.linears.0.bias"],
                     p[f"{att}.dnn.activation_layers.0.alpha"].squeeze(-1))
            h = dice(p[f"{att}.dnn.linears.1.weight"] @ h + p[f"{att}.dnn.linears.1.bias"],
                     p[f"{att}.dnn.activation_layers.1.alpha"].squeeze(-1))
            w = (p[f"{att}.dense.weight"] @ h + p[f"{att}.dense.bias"]).squeeze()
            expected_w[b, t] = w
            expected[b] += w * k  # weighted sum, no softmax
    with torch.no_grad():
        pooled = m.history_pool(X)
        weights = m.attention_weights(X)
    assert torch.allclose(weights, expected_w, atol=1e-6)
    assert torch.allclose(pooled, expected, atol=1e-6)
    assert torch.equal(pooled[1], torch.zeros(4))  # empty history pools to exactly zero
    assert (weights[X[:, 1:5] == 0] == 0).all()  # padding positions get zero weight
    assert not torch.allclose(weights[2].sum(), torch.tensor(1.0))  # not normalised


def test_din_padding_row_is_never_read_and_empty_history_is_finite():
    m, X = tiny_din()
    with torch.no_grad():
        before_pool, before = m.history_pool(X), m(X)
        m.embedding_dict["item"].weight[0] = 1e3  # the padding row (index 0 is padding only)
        assert torch.equal(m.history_pool(X), before_pool)
        assert torch.equal(m(X), before)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in m.named_parameters()}
    loss = torch.nn.functional.binary_cross_entropy_with_logits(functional_call(m, params, (X[1:2],)), torch.ones(1))
    grads = torch.autograd.grad(loss, list(params.values()))
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
    assert grads[list(params).index("embedding_dict.item.weight")][0].abs().sum() == 0


def test_din_history_matters(synth):
    """The pooled history changes the prediction (a test that the attention is wired in)."""
    m = build_model("din", synth.schema, seed=0, embedding_init_std=0.5)
    X = FeatureEncoder(synth).encode(np.arange(100))
    a, b = synth.schema.columns["hist_item_id"]
    X2 = X.clone()
    X2[:, a:b] = 0
    with torch.no_grad():
        changed = m(X) != m(X2)
    has_history = (X[:, a:b] != 0).any(dim=1)
    assert changed[has_history].all() and not changed[~has_history].any()


# -- end to end -----------------------------------------------------------------------------------
SMALL = dict(dataset="synthetic", dataset_options={"n_users": 300, "n_items": 120, "events_per_user": 20, "seed": 1},
             clients_per_round=20)


def test_din_simulation_learns():
    from rf2.config import RunConfig
    from rf2.simulation import Simulation

    sim = Simulation(RunConfig(**SMALL, model="din", epochs=2), progress=False)
    before = sim.evaluate().overall["auc"]
    res = sim.run()
    auc = res.metrics.overall["auc"]
    assert math.isfinite(auc) and np.isfinite(res.rounds["train_loss"]).all()
    assert auc > before + 0.03 and auc > 0.58


@pytest.mark.parametrize("name,optimization",
                         [("din", "channel:1:2:4"), ("deepfm", "channel:1:4:16"), ("dcn", "prune:1:2:4")])
def test_simulation_runs_with_optimisations(name, optimization):
    from rf2.config import RunConfig
    from rf2.simulation import Simulation

    runs = {}
    for opt in ("none", optimization):
        sim = Simulation(RunConfig(**SMALL, model=name, optimization=opt, max_rounds=4), progress=False)
        runs[opt] = (sim, sim.run())
    (base_sim, base), (sim, res) = runs["none"], runs[optimization]
    bt = res.metrics.by_tier
    assert np.isfinite(bt["auc"]).all()
    # the optimisation reached training: same seed and clients as `none`, another model and other AUCs
    assert any(not torch.equal(sim.params[k], base_sim.params[k]) for k in sim.params)
    assert not np.allclose(bt["auc"], base.metrics.by_tier["auc"], rtol=0, atol=1e-6)
    assert res.rounds["participants"].tolist() == base.rounds["participants"].tolist()
    # and it cut the weaker tiers' uploads in order (sub-models or pruned updates), not the top tier's
    per = (bt["upload_mb"] / bt["participations"]).loc[["low", "mid", "high"]]
    base_per = (base.metrics.by_tier["upload_mb"] / base.metrics.by_tier["participations"]).loc[["low", "mid", "high"]]
    assert per["low"] < per["mid"] < per["high"] and per["low"] < 0.6 * base_per["low"]
