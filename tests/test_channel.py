"""Channel (HeteroFL sub-models): the masked model is the narrow model; averaging over holders; costs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optimizations import Channel, ClientContext, parse_optimization
from rf2.aggregation import fedavg
from rf2.clients.batch import RoundBatch
from rf2.clients.batched import BatchedEngine
from rf2.clients.reference import ReferenceEngine
from rf2.data import FeatureEncoder
from rf2.models import build_model


def ctx(cid, tier):
    return ClientContext(cid, tier, ("low", "mid", "high")[tier], 0, 0, 10, cid)


def test_builds_from_table1():
    assert parse_optimization("channel:1:2:4").per_tier == (0.25, 0.5, 1.0)
    assert parse_optimization("channel:1:2:8").per_tier == (0.125, 0.25, 1.0)
    assert parse_optimization("channel:1:4:16").per_tier == (0.0625, 0.25, 1.0)


@pytest.mark.parametrize("width", [0.0625, 0.25, 0.5])
def test_masked_model_equals_a_narrow_model(synth, width):
    full = build_model("dlrm", synth.schema, seed=0)
    k = math.ceil(width * 256)
    narrow = build_model("dlrm", synth.schema, seed=1, top_hidden=(k,))
    with torch.no_grad():
        sd = {n: p.clone() for n, p in full.state_dict().items()}
        sd["top.linears.0.weight"] = sd["top.linears.0.weight"][:k]
        sd["top.linears.0.bias"] = sd["top.linears.0.bias"][:k]
        sd["out.weight"] = sd["out.weight"][:, :k]
        narrow.load_state_dict(sd)
    masks = Channel("c", (width, 1, 1)).tier_masks(full, width)
    params = {n: p.detach() * masks[n] if n in masks else p.detach() for n, p in full.named_parameters()}
    X = FeatureEncoder(synth).encode(np.arange(200))
    with torch.no_grad():
        a = torch.func.functional_call(full, params, (X,))
        b = narrow(X)
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, full(X), atol=1e-4)  # and it differs from the full model


def test_full_width_clients_hold_everything_and_no_masks_when_all_full(synth):
    model = build_model("dlrm", synth.schema, seed=0)
    opt = Channel("c", (0.25, 0.5, 1.0))
    assert opt.client_masks([ctx(0, 2), ctx(1, 2)], model) is None
    masks = opt.client_masks([ctx(0, 0), ctx(1, 2)], model)
    for m in masks.values():
        assert m[1].all() and not m[0].all()


def test_weights_averaged_over_holders_only(synth):
    ds = synth
    model = build_model("dlrm", ds.schema, seed=0)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    clients = np.flatnonzero(ds.train_counts > 0)[:4]
    contexts = [ctx(int(c), t) for c, t in zip(clients, (0, 0, 2, 2))]
    opt = Channel("c", (0.25, 0.5, 1.0))
    masks = opt.client_masks(contexts, model)
    batch = RoundBatch.gather(ds, FeatureEncoder(ds), clients)
    for engine in (ReferenceEngine(), BatchedEngine()):
        u = engine.client_updates(model, params, batch, contexts, 1, 1.0, masks)
        agg = fedavg(u)
        W = u.dense["top.linears.0.weight"]
        w = u.weights
        # units 64.. are held by the two high-tier clients only
        hi = (w[2] * W[2, 64:] + w[3] * W[3, 64:]) / (w[2] + w[3])
        assert torch.allclose(agg["top.linears.0.weight"][64:], hi, atol=1e-7)
        # units < 64 by everyone
        allw = (w[:, None, None] * W[:, :64]).sum(0) / w.sum()
        assert torch.allclose(agg["top.linears.0.weight"][:64], allw, atol=1e-7)
        assert (W[0, 64:] == 0).all() and (W[1, 64:] == 0).all()


def test_compute_fraction_and_upload_bits(synth):
    model = build_model("dlrm", synth.schema, seed=0)
    opt = Channel("c", (0.25, 0.5, 1.0))
    frac = opt.compute_fraction([ctx(0, 0), ctx(1, 1), ctx(2, 2)], model)
    assert frac == pytest.approx([0.25, 0.5, 1.0])
    params = {k: p.detach() for k, p in model.named_parameters()}
    ds = synth
    clients = np.flatnonzero(ds.train_counts > 0)[:3]
    contexts = [ctx(int(c), t) for c, t in zip(clients, (0, 1, 2))]
    masks = opt.client_masks(contexts, model)
    u = ReferenceEngine().client_updates(model, params, RoundBatch.gather(ds, FeatureEncoder(ds), clients), contexts, 1, 1.0, masks)
    total = sum(p.numel() for p in params.values())
    in_dim = params["top.linears.0.weight"].shape[1]
    unheld_low = (256 - 64) * (in_dim + 1 + 1)  # rows + biases of the hidden layer, columns of the output layer
    bits = opt.upload_bits(u)
    assert bits[0].item() == 32 * (total - unheld_low)
    assert bits[2].item() == 32 * total


def test_model_without_hidden_layers_is_a_clear_error(synth):
    model = build_model("dlrm", synth.schema, seed=0)
    model.hidden_layers = lambda: []
    with pytest.raises(ValueError, match="no hidden layers"):
        Channel("c", (0.5, 1, 1)).client_masks([ctx(0, 0)], model)
