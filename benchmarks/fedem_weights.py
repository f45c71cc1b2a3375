"""FedEM's aggregation weights after the first round on MovieLens-100K, against what the
authors' code gives (``fedem-method.md`` §4.4, "What the weights look like with the defaults":
off-diagonal similarity mean 0.012, max 0.028; self-weight 0.87-0.92, ~14 other clients share
the rest; with 1 local epoch mean S 0.17 and self-weight 0.62).

    RF2_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/fedem_weights.py [LOCAL_EPOCHS] [SEED]
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from optimizations import make_contexts
from rf2.aggregation.personalised import fedem_weights, pca_fingerprints, similarity
from rf2.clients.fedem import FedEMTraining, train_batched
from rf2.clients.local import LocalTraining
from rf2.config import RunConfig
from rf2.personalised import initial_models
from rf2.seeding import numpy_rng
from rf2.simulation import Simulation


def main(local_epochs: int = 10, seed: int = 0) -> None:
    cfg = RunConfig(dataset="ml-100k", dataset_options={"split": "leave-one-out"}, model="fcf", optimization="fedem",
                    clients_per_round=943, local_epochs=local_epochs, local_batch_size=256, train_negatives=4,
                    local_early_stop="cumulative_mean" if local_epochs > 1 else "none", client_optimizer="adam",
                    client_lr=0.1, sampled_k=10, seed=seed)
    sim = Simulation(cfg, progress=False)
    _, chosen = sim.schedule()[0]
    clients = np.asarray(chosen)
    ctx = make_contexts(sim.train_seed, clients, sim.tiers.tier, sim.tiers.names, 0, 0,
                        sim.dataset.train_counts[clients] * 5)
    batch = sim.gather(clients, ctx)
    models = initial_models(sim).select(torch.from_numpy(clients))
    tcfg = FedEMTraining(cfg.local_training, lr_embedding=0.1, lr_adapter=0.1)
    trained = models
    _, epochs = train_batched(trained, torch.arange(clients.size), None, torch.zeros(clients.size, dtype=torch.bool),
                              batch.X[:, sim.model._icol].long(), batch.y.float(), batch.ptr, ctx, tcfg)
    pick = np.sort(numpy_rng(sim.train_seed, "fedem_aggregation", 0).choice(clients.size, clients.size // 10, replace=False))
    S = similarity(pca_fingerprints(trained.Q[pick]))
    W = fedem_weights(batch.counts()[pick].float(), S)
    off = S[~torch.eye(S.shape[0], dtype=torch.bool)]
    self_w = torch.diagonal(W)
    others = ((W > 0).sum(1) - 1).float()
    print(f"{local_epochs} local epochs (mean run {epochs.float().mean():.1f}), seed {seed}, {pick.size} aggregated clients: "
          f"off-diagonal S mean {off.mean():.3f} max {off.max():.3f}; self-weight mean {self_w.mean():.2f} "
          f"range {self_w.min():.2f}-{self_w.max():.2f}; other clients with weight > 0: mean {others.mean():.1f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
