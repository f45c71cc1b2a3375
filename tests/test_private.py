"""Client-private parameters (HeteFedRec §III): kept on the client across rounds, never uploaded
or averaged; NCF's user embedding is one, and any model can declare dense ones too."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rf2.config import RunConfig
from rf2.data import make_synthetic
from rf2.models.ncf import NCF
from rf2.models import build_model, register_model, MODELS
from rf2.simulation import Simulation
from tier_mapping import map_tiers

DS_OPTS = {"n_users": 90, "n_items": 40, "events_per_user": 10, "seed": 3, "user_id": True}


@pytest.fixture(scope="module")
def ds():
    return make_synthetic(**DS_OPTS)


def sim(ds, **kw) -> Simulation:
    cfg = RunConfig(dataset="synthetic", dataset_options=DS_OPTS, model="ncf", clients_per_round=30,
                    model_options={"embedding_dim": 8}, **kw)
    return Simulation(cfg, dataset=ds, tiers=map_tiers(ds, cfg.mapping, 3, seed=0), progress=False)


def test_ncf_shape_and_private_declaration(ds):
    m = build_model("ncf", ds.schema, seed=0, embedding_dim=8)
    assert m.private_parameters() == {"embedding_dict.user_id.weight"}
    X = torch.zeros((5, ds.schema.n_columns))
    X[:, ds.schema.columns["user_id"][0]] = torch.arange(1, 6)
    X[:, ds.schema.columns["item_id"][0]] = 3
    assert m(X).shape == (5,)
    widths = [layer.width for layer in m.hidden_layers()]
    assert widths == [8, 8] and m.ffn[0].in_features == 16  # [2N, 8, 8]
    with pytest.raises(ValueError, match="no sparse user feature 'user_id'"):
        NCF(make_synthetic(n_users=20, n_items=10, events_per_user=6).schema)


def test_private_rows_are_the_clients_own_sgd_step_and_never_uploaded(ds):
    s = sim(ds, max_rounds=1, server_optimizer="sgd", server_lr=1.0)
    before = {k: v.clone() for k, v in s.params.items()}
    (epoch, chosen), = s.schedule()[:1]
    s.train_round(0, epoch, chosen)
    user_table = before["embedding_dict.user_id.weight"]
    after = s.params["embedding_dict.user_id.weight"]
    trained = set((chosen + 1).tolist())  # user u is row u + 1
    untouched = [r for r in range(after.shape[0]) if r not in trained]
    assert torch.equal(after[untouched], user_table[untouched])  # nobody else's row moved
    # oracle: each trained row = its own client's full-batch SGD step, not an average
    for u in chosen[:5].tolist():
        idx = np.flatnonzero((ds.user == u) & ~ds.is_test)
        X, y = s.encoder.encode(idx), s.encoder.labels(idx)
        leaf = {k: v.clone().requires_grad_(True) for k, v in before.items()}
        loss = F.binary_cross_entropy_with_logits(torch.func.functional_call(s.model, leaf, (X,)), y)
        g = torch.autograd.grad(loss, leaf["embedding_dict.user_id.weight"])[0]
        want = user_table[u + 1] - 1.0 * g[u + 1]
        assert torch.allclose(after[u + 1], want, atol=1e-6)
    # upload: only the public parameters (item table + FFN), 32 bits each, per client
    public = sum(v.numel() for k, v in s.params.items() if k != "embedding_dict.user_id.weight")
    assert s.cost["upload_bits"].sum() == pytest.approx(32.0 * public * len(chosen))


def test_reference_and_batched_agree_with_private_tables(ds):
    a, b = sim(ds, engine="reference", max_rounds=3), sim(ds, engine="batched", max_rounds=3)
    ra, rb = a.run(), b.run()
    for k in a.params:
        assert torch.allclose(a.params[k], b.params[k], atol=1e-5), k
    assert ra.metrics.overall["auc"] == pytest.approx(rb.metrics.overall["auc"], abs=1e-5)


class _PrivateHeadNCF(NCF):
    """Test model: NCF whose output bias is also private (a dense private parameter)."""

    def private_parameters(self):
        return super().private_parameters() | {"out.bias"}


def test_dense_private_parameters_are_kept_per_client(ds):
    MODELS["_ncf_private_head"] = _PrivateHeadNCF
    try:
        runs = {}
        for engine in ("reference", "batched"):
            cfg = RunConfig(dataset="synthetic", dataset_options=DS_OPTS, model="_ncf_private_head", clients_per_round=30,
                            model_options={"embedding_dim": 8}, engine=engine, max_rounds=2, client_lr=5.0)
            s = Simulation(cfg, dataset=ds, tiers=map_tiers(ds, "random", 3, seed=0), progress=False)
            init_bias = s.params["out.bias"].clone()
            res = s.run()
            runs[engine] = (s, res)
            store = s.private_store["out.bias"]
            assert len(store) == 60  # 2 rounds x 30 clients, each kept its own value
            assert torch.equal(s.params["out.bias"], init_bias)  # the global copy is never averaged into
            values = torch.stack(list(store.values()))
            assert values.std() > 0  # clients differ
            # evaluation uses each user's own bias: the global bias gives other scores
            u = next(iter(store))
            idx = ds.test_index[ds.user[ds.test_index] == u]
            with torch.no_grad():
                own = s.predict(idx)
                glob = s.model(s.encoder.encode(idx)).numpy()
            assert np.allclose(own - glob, float(store[u] - init_bias), atol=1e-5)
        (sa, _), (sb, _) = runs["reference"], runs["batched"]
        for c, v in sa.private_store["out.bias"].items():
            assert torch.allclose(v, sb.private_store["out.bias"][c], atol=1e-5)
    finally:
        MODELS.pop("_ncf_private_head", None)


def test_ncf_run_reports_ranking_metrics_per_tier(ds):
    res = sim(ds, ranking_k=10, epochs=2).run()
    f = res.metrics.frame
    for metric in ("auc", "ndcg@10", "recall@10"):
        rows = f[f["metric"] == metric]
        assert set(rows["tier"]) == {"low", "mid", "high", "overall"}, metric
        assert rows["value"].between(0, 1).all()
    # the AUC rows keep their sizes (the cost rows take theirs from the first row of each tier)
    auc = f[(f["metric"] == "auc") & (f["tier"] == "overall")].iloc[0]
    up = f[(f["metric"] == "upload_mb") & (f["tier"] == "overall")].iloc[0]
    assert auc["n_events"] == up["n_events"]
