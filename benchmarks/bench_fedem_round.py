"""One FedEM client-training round on MovieLens-100K (leave-one-out, 4 fresh negatives per positive,
10 local epochs of 256, 10 % of the clients holding a personalised table): the batched trainer
against the per-client reference (torch.optim.Adam, the authors' way), same clients, same
batches, in one run. Prints seconds, the ratio and peak RSS.

    RF2_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/bench_fedem_round.py [CLIENTS] [THREADS] [REFERENCE=1|0]
"""
from __future__ import annotations

import resource
import sys
import time

import numpy as np
import torch

from optimizations import make_contexts
from rf2.clients.batch import RoundBatch
from rf2.clients.fedem import ClientModels, FedEMTraining, train_batched, train_reference
from rf2.clients.local import LocalTraining
from rf2.data import FeatureEncoder, load_dataset
from rf2.models import build_model


def main(n_clients: int = 100, threads: int = 1, reference: int = 1) -> None:
    torch.set_num_threads(threads)
    ds = load_dataset("ml-100k", split="leave-one-out")
    model = build_model("fcf", ds.schema, seed=0)
    clients = np.sort(np.random.default_rng(0).choice(ds.n_users, min(n_clients, ds.n_users), replace=False))
    ctx = make_contexts(0, clients, np.zeros(ds.n_users, dtype=np.int64), ["t"], 0, 0, ds.train_counts[clients] * 5)
    batch = RoundBatch.gather(ds, FeatureEncoder(ds), clients, negatives=4, seeds=[c.seed for c in ctx])
    Q0 = model.embedding_dict[model.item_feature.table].weight.detach()
    C = clients.size
    g = torch.Generator().manual_seed(0)
    models = ClientModels(torch.randn(C, Q0.shape[1], generator=g), Q0.expand(C, *Q0.shape).clone(),
                          [p.detach().expand(C, *p.shape).clone() for k, p in model.named_parameters() if k.startswith("adapter")])
    holder = torch.zeros(C, dtype=torch.bool)
    holder[: max(1, C // 10)] = True
    G = Q0 + 0.1 * torch.randn(int(holder.sum()), *Q0.shape, generator=g)
    cfg = FedEMTraining(LocalTraining(epochs=10, batch_size=256, early_stop="cumulative_mean"))
    rows = torch.arange(C)
    args = (rows, G, holder, batch.X[:, model._icol].long(), batch.y.float(), batch.ptr, ctx, cfg)
    copy = lambda: ClientModels(models.P.clone(), models.Q.clone(), [a.clone() for a in models.A])  # noqa: E731
    t = time.perf_counter()
    train_batched(copy(), *args)  # the first call also compiles the per-client loop (numba)
    first = time.perf_counter() - t
    fast, ref = copy(), copy()  # trained in place
    t = time.perf_counter()
    train_batched(fast, *args)
    tb = time.perf_counter() - t
    if not reference:  # batched only (a third argument 0)
        print(f"{C} clients, {threads} thread(s): batched {tb:.2f} s (first call, with compiling: {first:.1f} s)")
        return
    t = time.perf_counter()
    train_reference(ref, *args)
    tr = time.perf_counter() - t
    print(f"{C} clients, {int(batch.counts().sum())} samples, 10 epochs of 256, {int(holder.sum())} holders, "
          f"{threads} thread(s): batched {tb:.2f} s (first call, with compiling: {first:.1f} s), reference {tr:.1f} s, "
          f"reference/batched = {tr / tb:.1f}x; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
