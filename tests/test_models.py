"""Model structure: DLRM as RF² §5.1 describes it, and its pieces against deepctr-torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rf2._deepctr import layers as dc_layers
from rf2.data import FeatureEncoder
from rf2.models import build_model, model_options


def test_dlrm_shapes_follow_rf2(synth):
    m = build_model("dlrm", synth.schema, seed=0)
    params = dict(m.named_parameters())
    assert all(p.shape[1] == 16 for k, p in params.items() if k.startswith("embedding_dict"))
    assert params["bottom.linears.0.weight"].shape[0] == 16  # bottom MLP of 16 (synthetic has a dense feature)
    assert params["top.linears.0.weight"].shape[0] == 256 and params["out.weight"].shape == (1, 256)
    n_vec = len(synth.schema.sparse) + len(synth.schema.sequences) + 1
    assert params["top.linears.0.weight"].shape[1] == n_vec * (n_vec - 1) // 2 + 16
    assert "user_id" not in {f.name for f in synth.schema.features}


def test_interaction_equals_deepctr_inner_product(synth):
    m = build_model("dlrm", synth.schema, seed=0)
    X = FeatureEncoder(synth).encode(np.arange(64))
    from rf2.models.base import dense_inputs, pooled_embeddings

    vecs = pooled_embeddings(X, m.schema, m.embedding_dict) + [m.bottom(dense_inputs(X, m.schema)).unsqueeze(1)]
    ref = dc_layers.InnerProductLayer(reduce_sum=True)(vecs).squeeze(-1)
    V = torch.cat(vecs, dim=1)
    ours = torch.bmm(V, V.transpose(1, 2)).flatten(1)[:, m.pair_index]
    assert torch.allclose(ours, ref, atol=1e-7)


def test_same_seed_same_weights_and_global_rng_untouched(synth):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = build_model("dlrm", synth.schema, seed=4)
    after = torch.rand(3)
    b = build_model("dlrm", synth.schema, seed=4)
    c = build_model("dlrm", synth.schema, seed=5)
    assert torch.equal(before, after)  # building a model does not consume global randomness
    for (k, p), (_, q), (_, r) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        assert torch.equal(p, q), k
    assert any(not torch.equal(p, r) for (_, p), (_, r) in zip(a.named_parameters(), c.named_parameters()))


def test_unknown_model_option():
    assert "embedding_dim" in model_options("dlrm")
    with pytest.raises(ValueError, match="no option"):
        build_model("dlrm", None, embeding_dim=8)


@pytest.mark.parametrize("combiner", ["sum", "mean"])
def test_history_pooling_by_embedding_bag_equals_the_masked_reference(combiner):
    """The fast pooling (one embedding_bag over the non-padding entries) gives the masked
    reference's vectors and table gradients: rows without any entry (0), one entry, full rows,
    repeated items; and a vmapped call (per-client inputs) takes the reference path and agrees."""
    from torch.func import vmap

    from rf2.models.base import _bag_pool, _masked_pool, _under_transform

    g = torch.Generator().manual_seed(0)
    idx = torch.randint(1, 9, (7, 5), generator=g)
    idx[0] = 0
    idx[1, 1:] = 0
    idx[2, 3:] = 0
    idx[3] = 4  # one item five times
    w1 = torch.randn(9, 3, generator=g, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_(True)
    coef = torch.randn(7, 1, 3, generator=g)
    fast = _bag_pool(idx, w1, combiner)
    ref = _masked_pool(torch.nn.functional.embedding(idx, w2), idx, combiner)
    assert fast.shape == ref.shape == (7, 1, 3)
    torch.testing.assert_close(fast, ref, rtol=1e-6, atol=1e-6)
    assert (fast[0] == 0).all() and torch.allclose(fast[1, 0], w1[idx[1, 0]])
    expect3 = w1[4] * (5 if combiner == "sum" else 1)
    torch.testing.assert_close(fast[3, 0], expect3)
    (fast * coef).sum().backward()
    (ref * coef).sum().backward()
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-6, atol=1e-6)
    assert not _under_transform()
    seen = []
    vmap(lambda i: seen.append(_under_transform()) or i.sum())(idx)
    torch.func.grad(lambda w: seen.append(_under_transform()) or w.sum())(w1.detach())
    assert seen == [True, True] and not _under_transform()
