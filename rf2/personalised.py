"""A personalised run: clients keep whole models across rounds (FedEM, ``fedem-method.md`` §4-5).

The round of :mod:`rf2.simulation`, for an optimisation with ``personalised = True``
(:class:`optimizations.fedem.FedEM`), whose clients hold everything themselves:

1. **select** the round's clients (the run's schedule; FedEM: every client, ``clients_per_round``
   = number of users);
2. **download**: a client holding a personalised table ``G`` from the server merges it into its
   own at round start (§4.1; :func:`rf2.clients.fedem.merge`);
3. **train locally** with mini-batches and fresh negatives (:mod:`rf2.clients.fedem`; the run's
   ``local_*`` settings and ``train_negatives``);
4. **upload**: ``agg_ratio`` of the participants, sampled uniformly, send their item tables
   (``n x d`` 32-bit floats each, the system model's upload);
5. **aggregate**: each of them gets its own ``G_k = Σ_l W_kl Q_l`` (§4.4;
   :mod:`rf2.aggregation.personalised`); no global model.

Client state lives in one ``[N, n, d]`` tensor of local tables (ML-100K: 943 x 1,683 x 16 floats
= 0.1 GB; ML-1M 6,040 x 3,707 x 16 = 1.4 GB) plus the user embeddings and adapters; training a
round needs about five more copies of the participants' tables (working copy, gradient, Adam's
two moments, update). :func:`memory_needed` is checked against the memory available before
training starts.

Evaluation (§5): every user scores its test item and its 99 evaluation negatives with its own
model (merged once with its ``G`` if it holds one); HR/NDCG@``sampled_k`` per tier, and the AUC of
the positive against the negatives per tier. ``valid_every`` evaluates every N rounds;
``select_by``: ``last``, ``valid`` (best validation HR) or ``test`` (best test HR, the authors'
choice; the metrics then carry a ``selected_on_test`` row = 1 so no reader mistakes it for a
held-out result).
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from optimizations import make_contexts

from rf2.aggregation.personalised import fedem_aggregate
from rf2.clients.fedem import ClientModels, FedEMTraining, merge, scores, train_batched, train_reference
from rf2.device import cpu_draw, to_numpy
from rf2.evaluation import OVERALL, TierMetrics
from rf2.evaluation.sampled import candidates, sampled_from_scores
from rf2.evaluation.scores import EvalScores
from rf2.seeding import numpy_rng, torch_generator

if TYPE_CHECKING:
    from rf2.simulation import RunResult, Simulation


def memory_needed(n_users: int, n_items: int, dim: int, participants: int, aggregated: int, keep_all_g: bool) -> int:
    """Bytes a FedEM run needs at least: every client's table, the round's working copies (5 per
    participant), the personalised tables held (the aggregated ones, or every client's with
    ``g=keep``)."""
    table = 4 * n_items * dim
    return table * (n_users + 5 * participants + (n_users if keep_all_g else 2 * aggregated))


class GStore:
    """The personalised tables clients hold: ``latest`` (only last round's aggregated clients,
    the authors' code, §7.2) or ``keep`` (each client keeps the last one it received)."""

    def __init__(self, mode: str):
        self.mode = mode
        self.tables: dict[int, torch.Tensor] = {}

    def received(self, clients: list[int], G: torch.Tensor) -> None:
        if self.mode == "latest":
            self.tables = {}
        for i, c in enumerate(clients):
            self.tables[c] = G[i]

    def of(self, clients: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(holder [C], G [H, n, d])``: which of ``clients`` hold a table, and the holders'
        tables in client order (``None`` when no client holds one)."""
        holder = torch.tensor([int(c) in self.tables for c in clients], dtype=torch.bool)
        if not bool(holder.any()):
            return holder, None
        return holder, torch.stack([self.tables[int(c)] for c in clients if int(c) in self.tables])


def initial_models(sim: "Simulation") -> ClientModels:
    """Every client's starting model (§3 "Initialisation"): the common item table ``Q0`` copied to
    all; ``init=shared``: one user embedding and one adapter for all (deep copies of a template);
    ``per_client``: each client's own user row and an adapter drawn from its own stream."""
    model, st, N = sim.model, sim.optimization.settings, sim.dataset.n_users
    Q0 = sim.params[model.item_table]
    Q = Q0.expand(N, *Q0.shape).clone()
    users = sim.params[model.user_table]
    A0 = [sim.params[k] for k in model.adapter_names()]
    if st.init == "shared":
        g = torch_generator(sim.train_seed, "fedem_template")
        p = cpu_draw(torch.randn, users.shape[1], generator=g)
        P = p.expand(N, -1).clone()
        A = [a.expand(N, *a.shape).clone() for a in A0]
    else:
        P = users[:N].clone()
        A = [torch.empty(N, *a.shape) for a in A0]
        for c in range(N):
            g = torch_generator(sim.train_seed, "fedem_adapter", c)
            for i in range(0, len(A0), 2):
                W, b = A0[i], A0[i + 1]
                bound = 1 / math.sqrt(W.shape[1])  # nn.Linear's default init (Kaiming uniform, a = sqrt 5)
                A[i][c] = (cpu_draw(torch.rand, W.shape, generator=g) * 2 - 1) * bound
                A[i + 1][c] = (cpu_draw(torch.rand, b.shape, generator=g) * 2 - 1) * bound
    return ClientModels(P, Q, A)


def run_personalised(sim: "Simulation") -> "RunResult":
    from rf2.models.fcf import FCF
    from rf2.simulation import DivergenceError, RunResult, available_memory_bytes, candidate_events, candidate_metrics, peak_rss_mb

    cfg, ds, opt = sim.config, sim.dataset, sim.optimization
    st = opt.settings
    if not isinstance(sim.model, FCF):
        raise ValueError(f"optimization {opt.spec!r} needs model = \"fcf\" (FedEM's backbone), got {cfg.model!r}")
    if ds.eval_negatives is None or not cfg.sampled_k:
        raise ValueError(f"optimization {opt.spec!r} is evaluated by leave-one-out HR/NDCG: use dataset option "
                         "split = 'leave-one-out' and sampled_k (FedEM: 10)")
    if not cfg.train_negatives:
        raise ValueError(f"optimization {opt.spec!r} trains on implicit feedback: set train_negatives (FedEM: 4)")
    if cfg.client_optimizer != "adam":
        raise ValueError(f"optimization {opt.spec!r} trains with Adam (fedem-method.md §4.2): set client_optimizer = 'adam'")
    if cfg.local_valid_fraction:
        raise ValueError(f"optimization {opt.spec!r} trains with FedEM's own local loop, which has no validation "
                         "hold-out; set local_valid_fraction = 0 (its early stop: local_early_stop)")
    t0 = time.perf_counter()
    plan = sim.schedule()
    N, n, d = ds.n_users, *sim.params[sim.model.item_table].shape
    K = opt.selection_size(cfg.clients_per_round)
    agg_n = int(math.floor(K * st.agg_ratio)) if st.agg != "none" else 0
    need, have = memory_needed(N, n, d, K, agg_n, st.g == "keep"), available_memory_bytes()
    if have is not None and need > have:
        raise ValueError(f"optimization {opt.spec!r} keeps a {n} x {d} item table per client ({N} clients) and needs "
                         f"at least {need / 1e9:.1f} GB, but {have / 1e9:.1f} GB are available; use fewer users "
                         "(dataset option), a smaller embedding_dim, or fewer clients_per_round")
    models = initial_models(sim)
    store = GStore(st.g)
    train = train_batched if cfg.engine == "batched" else train_reference
    tcfg = FedEMTraining(cfg.local_training, lr_embedding=cfg.client_lr, lr_adapter=st.lr_adapter, rho=st.rho,
                         merge_forward=st.merge_forward)
    item_col = sim.model._icol
    T = sim.tiers.n_tiers
    log, best = [], None
    bar = tqdm(plan, desc=f"{opt.spec} | {sim.tiers.spec}", unit="round", disable=not sim.progress, leave=False,
               dynamic_ncols=True)
    for round_, (epoch, chosen) in enumerate(bar):
        ts = time.perf_counter()
        contexts = make_contexts(sim.train_seed, chosen, sim.tiers.tier, sim.tiers.names, round_, epoch,
                                 ds.train_counts[chosen] * (1 + cfg.train_negatives))
        clients = np.asarray(chosen, dtype=np.int64)
        idx = torch.as_tensor(clients)
        batch = sim.gather(clients, contexts)
        holder, G = store.of(clients)
        if G is not None and st.merge_start:  # §4.1: holders merge their G into their own table
            with torch.no_grad():
                h = idx[holder]
                models.Q[h] = merge(models.Q[h], G, [a[h] for a in models.A], st.rho)
        loss, epochs_run = train(models, idx, G, holder, batch.X[:, item_col].long(), batch.y.to(torch.float32),
                                 batch.ptr, contexts, tcfg)  # updates the clients' models in place
        counts = batch.counts().to(torch.float32)
        w = float((loss * counts).sum() / counts.sum())
        if not math.isfinite(w):
            raise DivergenceError(f"round {round_}: training loss is {w}")
        bits = np.zeros(clients.size)
        agg_n = int(math.floor(clients.size * st.agg_ratio)) if st.agg != "none" else 0  # §4.4 step 1
        if agg_n:  # §4.4: a uniform sample of the participants uploads its tables
            pick = np.sort(numpy_rng(sim.train_seed, "fedem_aggregation", round_).choice(clients.size, agg_n, replace=False))
            a_idx = torch.as_tensor(clients[pick])
            Gnew, _ = fedem_aggregate(models.Q[a_idx], counts[torch.as_tensor(pick)], alpha=st.alpha, sim_mode=st.sim,
                                      agg_mode=st.agg if st.agg != "none" else "avg", pca_sign=st.pca_sign, clip=st.clip)
            store.received(clients[pick].tolist(), Gnew)
            bits[pick] = 32.0 * n * d
        elif st.g == "latest":
            store.received([], torch.zeros(0, n, d))
        costs = sim.system.costs(contexts, bits, cfg.local_steps * to_numpy(epochs_run))
        tiers = sim.tiers.tier[clients]
        sim.cost["upload_bits"] += np.bincount(tiers, weights=bits, minlength=T)
        sim.cost["compute_s"] += np.bincount(tiers, weights=costs.compute_s, minlength=T)
        sim.cost["participations"] += np.bincount(tiers, minlength=T)
        row = {"round": round_, "epoch": epoch, "selected": int(clients.size), "participants": int(clients.size),
               "samples": int(counts.sum()), "train_loss": w, "upload_mb": float(bits.sum()) / 8e6,
               "sim_round_s": float(costs.total_s.max()), "local_epochs_mean": float(epochs_run.float().mean())}
        if cfg.valid_every and ((round_ + 1) % cfg.valid_every == 0 or round_ == len(plan) - 1):
            for split in ("valid", "test"):
                per_user = _sampled(models, store, ds, st.rho, cfg.sampled_k, split)[0]
                row.update({f"{split}_{c}": float(per_user[c].mean()) for c in per_user.columns if "@" in c})
            key = f"{'valid' if cfg.select_by == 'valid' else 'test'}_loo_hr@{cfg.sampled_k}"
            better = best is None or (row[key] > best[0] if cfg.select_by == "valid" else row[key] >= best[0])
            if cfg.select_by in ("valid", "test") and better:  # valid: earliest wins ties; test: latest (as the code)
                best = (row[key], round_, ClientModels(models.P.clone(), models.Q.clone(), [a.clone() for a in models.A]),
                        dict(store.tables))
        row["seconds"] = time.perf_counter() - ts
        log.append(row)
        bar.set_postfix(loss=f"{w:.4f}", refresh=False)
    bar.close()
    if best is not None:
        models, store.tables = best[2], best[3]
    if not all(torch.isfinite(t).all() for t in (models.P, models.Q)):
        raise DivergenceError("a client's model is not finite after training")
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    per_user, users, items, logits = _sampled(models, store, ds, st.rho, cfg.sampled_k, "test")
    metrics, per_user = candidate_metrics(users, items, logits, cfg.sampled_k, sim.tiers.tier, sim.tiers.names)
    ev_users, labels = candidate_events(users, items)
    sim.eval_scores = EvalScores.from_run(ev_users, sim.tiers.tier[ev_users], labels, logits.ravel(),
                                          sim.tiers.names, sim.tiers.tier, per_user)
    rounds = pd.DataFrame(log)
    metrics = sim._with_costs(metrics, rounds)
    if best is not None:
        sizes = metrics.frame.loc[metrics.frame["tier"] == OVERALL, ["n_events", "n_users"]].iloc[0].to_dict()
        extra = [{"tier": OVERALL, "metric": "selected_round", "value": float(best[1]), **sizes}]
        if cfg.select_by == "test":
            extra.append({"tier": OVERALL, "metric": "selected_on_test", "value": 1.0, **sizes})
        metrics = TierMetrics(pd.concat([metrics.frame, pd.DataFrame(extra)], ignore_index=True), metrics.tier_names)
    return RunResult(config=cfg, metrics=metrics, rounds=rounds, tiers=sim.tiers,
                     seconds={"load": sim.load_seconds, "train": train_s, "eval": time.perf_counter() - t1},
                     peak_rss_mb=peak_rss_mb(), scores=sim.eval_scores)


def _sampled(models: ClientModels, store: GStore, ds, rho, k: int, split: str):
    """Per-user sampled HR/NDCG@k on ``split`` with every user's own model (holders merged)."""
    users, items = candidates(ds, split)
    holder, G = store.of(users)
    logits = scores(models, G, holder, items, rho, rows=torch.as_tensor(users))
    return sampled_from_scores(users, logits, k), users, items, logits
