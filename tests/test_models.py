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
