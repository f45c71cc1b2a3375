"""Standalone training: every client trains alone (HeteFedRec §V-A, "Standalone").

An optimisation with ``collaborative = False`` (``standalone``, ``hetefedrec:...:standalone=on``)
has no server. The global model only provides the common starting point ``θ0``; client ``c``'s
model is ``θ0`` plus its own updates, and it is evaluated with that model alone.

The federated schedule is kept: a client is "selected" once per epoch and then takes
``local_steps`` steps of the client optimiser from its own current model (the optimiser state
starts fresh each time, as in federated training). Because clients never influence each other,
rf2 trains them in groups instead of round by round: the clients of each first-epoch round train
all ``epochs`` of their rounds back to back, are scored on their own test events (and, with
``ranking_k``, rank the whole catalogue; with ``sampled_k``, score their leave-one-out candidates) with their own model, and are then dropped. Memory stays
that of one federated round (a client's model is kept only as its touched table rows and its
dense parameters). The result equals training every client through the schedule and keeping
every model until the end (``tests/test_standalone.py`` checks it against a plain loop).

With ``train_negatives`` (HeteFedRec §V-A), a client's negatives are re-drawn every epoch from its
seed of that epoch's round (as a federated run draws them), so the item rows it touches change
from epoch to epoch: :class:`OwnRows` keeps the union of every row it has trained.

Clients without training data (never selected) are scored with ``θ0``. Costs: each round's
compute goes to the system model; nothing is uploaded (``upload_mb`` is 0).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from optimizations import make_contexts

from rf2.clients.batch import RoundBatch
from rf2.clients.batched import _LocalTable
from rf2.clients.reference import table_index_columns
from rf2.clients.updates import TableRows
from rf2.device import to_numpy
from rf2.evaluation import TierMetrics, tier_metrics
from rf2.evaluation.scores import EvalScores
from rf2.evaluation.ranking import _csr, ranking_by_user, ranking_frame, ranking_from_scores, relevant_and_excluded
from rf2.evaluation.sampled import candidates, sampled_frame, sampled_from_scores, score_candidates

if TYPE_CHECKING:
    from rf2.simulation import RunResult, Simulation


@contextmanager
def client_model(params: dict[str, torch.Tensor], dense: dict[str, torch.Tensor],
                 rows: dict[str, tuple[torch.Tensor, torch.Tensor]]):
    """Temporarily write one client's own values into the global parameters (which the model
    shares): ``dense[k]`` replaces parameter ``k``; ``rows[k] = (row ids, values)`` replaces those
    rows of table ``k``. Everything is restored on exit."""
    saved_dense = {k: params[k].clone() for k in dense}
    saved_rows = {k: params[k][r].clone() for k, (r, _) in rows.items()}
    with torch.no_grad():
        for k, v in dense.items():
            params[k].copy_(v)
        for k, (r, v) in rows.items():
            params[k][r] = v
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in saved_dense.items():
                params[k].copy_(v)
            for k, (r, _) in rows.items():
                params[k][r] = saved_rows[k]


class OwnRows:
    """The table rows a group of clients have made their own, per table: the rows each client
    has touched in any epoch so far and its current values of them. Keyed by ``client * n_rows +
    row`` (sorted), so a client whose touched rows change from epoch to epoch (training negatives
    re-drawn every epoch) keeps every row it ever trained; a row it has not touched yet is still
    the initial model's."""

    def __init__(self):
        self.keys: dict[str, torch.Tensor] = {}  # table -> [R] int64 sorted client * n_rows + row
        self.values: dict[str, torch.Tensor] = {}  # table -> [R, D]
        self.n_rows: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self.keys)

    def update(self, k: str, t: TableRows, values: torch.Tensor) -> None:
        """Clients' new ``values`` of the rows they touched in ``t`` (an engine's update of table ``k``)."""
        self.n_rows[k] = t.n_rows
        keys = t.client_of_row() * t.n_rows + t.rows
        if k in self.keys:  # the union; where a row is in both, the new value
            keys = torch.cat([self.keys[k], keys])
            values = torch.cat([self.values[k], values])
            order = torch.sort(keys, stable=True).indices
            keys, values = keys[order], values[order]
            last = torch.ones(keys.numel(), dtype=torch.bool)
            last[:-1] = keys[1:] != keys[:-1]
            keys, values = keys[last], values[last]
        self.keys[k], self.values[k] = keys, values.detach()

    def private_rows(self, params: dict[str, torch.Tensor], batch: RoundBatch, tables) -> dict[str, torch.Tensor]:
        """Each client's own values of the rows this batch touches, in the engines' round layout
        (per client its touched rows ascending, row 0 included), the initial model's where it has none."""
        out = {}
        for k, cols in tables.items():
            if k not in self.keys:
                continue
            lay = _LocalTable(batch.X, batch.segment(), batch.n_clients, cols, self.n_rows[k])
            rows = lay.rows
            keys = lay.client * self.n_rows[k] + rows
            vals = params[k].detach()[rows].clone()
            at = torch.searchsorted(self.keys[k], keys).clamp(max=self.keys[k].numel() - 1)
            hit = self.keys[k][at] == keys
            vals[hit] = self.values[k][at[hit]]
            out[k] = vals
        return out

    def of_client(self, i: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Client ``i``'s rows and values per table (for :func:`client_model`)."""
        out = {}
        for k, keys in self.keys.items():
            n = self.n_rows[k]
            a, b = torch.searchsorted(keys, torch.tensor([i * n, (i + 1) * n])).tolist()
            out[k] = (keys[a:b] - i * n, self.values[k][a:b])
        return out


def run_standalone(sim: "Simulation") -> "RunResult":
    from rf2.simulation import DivergenceError, RunResult, peak_rss_mb

    cfg, ds, opt, model, params = sim.config, sim.dataset, sim.optimization, sim.model, sim.params
    if cfg.max_rounds:
        raise ValueError(f"max_rounds={cfg.max_rounds}: optimization {opt.spec!r} trains every client alone, so there "
                         "are no server rounds to stop after; set max_rounds = 0 (use fewer epochs or a smaller dataset "
                         "for a quick look)")
    if cfg.valid_every:
        raise ValueError(f"valid_every={cfg.valid_every}: optimization {opt.spec!r} trains every client alone, so there "
                         "are no server rounds to validate after; set valid_every = 0")
    plan = sim.schedule()
    groups = [chosen for _, chosen in plan[: plan.per_epoch]]  # epoch 0; later epochs reuse its groups
    n_rounds = len(groups)
    tables = table_index_columns(model)
    test = ds.test_index
    test_users = ds.user[test]
    tptr, tpos = _csr(test_users, np.arange(test.size), ds.n_users)  # each user's positions in `test`
    logits = np.full(test.size, np.nan, dtype=np.float32)
    ranking = None
    if cfg.ranking_k:
        sets = relevant_and_excluded(ds, cfg.ranking_exclusion)
        has_relevant = np.diff(sets[0][0]) > 0
        all_items = np.arange(ds.n_items, dtype=np.int64)
        ranking = []
    if cfg.sampled_k:  # each user's test item + its evaluation negatives (rf2.evaluation.sampled)
        cand_users, cand_items = candidates(ds)
        cand_row = np.full(ds.n_users, -1, dtype=np.int64)
        cand_row[cand_users] = np.arange(cand_users.size)
        cand_scores = np.full(cand_items.shape, np.nan, dtype=np.float32)
    scored = np.zeros(ds.n_users, dtype=bool)
    log = []
    T = sim.tiers.n_tiers
    was = model.training
    model.eval()
    bar = tqdm(groups, desc=f"{cfg.optimization} | {sim.tiers.spec}", unit="group", disable=not sim.progress,
               leave=False, dynamic_ncols=True)
    train_s = eval_s = 0.0
    for r, clients in enumerate(bar):
        clients = np.asarray(clients, dtype=np.int64)
        ts = time.perf_counter()
        batch = None if cfg.train_negatives else RoundBatch.gather(ds, sim.encoder, clients)
        C = clients.size
        dense = {k: v.detach().expand(C, *v.shape).clone() for k, v in params.items() if k not in tables}
        own = OwnRows()
        for epoch in range(cfg.epochs):
            round_ = epoch * n_rounds + r
            contexts = make_contexts(sim.train_seed, clients, sim.tiers.tier, sim.tiers.names, round_, epoch,
                                     ds.train_counts[clients])
            if cfg.train_negatives:  # re-drawn every epoch from each client's stream, as in the federated rounds
                batch = sim.gather(clients, contexts)
            private = own.private_rows(params, batch, tables) if own else None
            u = sim.engine.client_updates(model, params, batch, contexts, cfg.local_training, cfg.client_lr,
                                          opt.client_masks(contexts, model), private=dense, private_rows=private,
                                          loss_args=opt.client_loss_args(contexts, model) or None,
                                          optimizer=cfg.client_optimizer)
            dense = {k: dense[k] + u.dense[k] for k in dense}
            for k, t in u.tables.items():
                start = private[k] if private is not None and k in private else params[k].detach()[t.rows]
                own.update(k, t, start + t.values)
            w = u.weights
            loss = float((u.loss * w).sum() / w.sum())
            if not math.isfinite(loss):
                raise DivergenceError(f"round {round_}: training loss is {loss}")
            costs = sim.system.costs(contexts, np.zeros(C), sim.passes(u), opt.compute_fraction(contexts, model))
            tiers = sim.tiers.tier[clients]
            sim.cost["compute_s"] += np.bincount(tiers, weights=costs.compute_s, minlength=T)
            sim.cost["participations"] += np.bincount(tiers, minlength=T)
            log.append({"round": round_, "epoch": epoch, "selected": C, "participants": C, "samples": int(w.sum()),
                        "train_loss": loss, "upload_mb": 0.0, "sim_round_s": float(costs.total_s.max())})
        te = time.perf_counter()
        train_s += te - ts
        # every client scored with its own model; the group's catalogue scores ranked together
        ranked, scores = [], []
        for i, c in enumerate(clients.tolist()):
            own_rows = own.of_client(i)
            with client_model(params, {k: v[i] for k, v in dense.items()}, own_rows), torch.no_grad():
                pos = tpos[tptr[c]: tptr[c + 1]]
                if pos.size:
                    logits[pos] = to_numpy(model(sim.encoder.encode(test[pos])))
                if ranking is not None and has_relevant[c]:
                    ranked.append(c)
                    scores.append(to_numpy(model(sim.encoder.encode_pairs(np.full(ds.n_items, c), all_items))))
                if cfg.sampled_k and cand_row[c] >= 0:
                    its = cand_items[cand_row[c]]
                    cand_scores[cand_row[c]] = to_numpy(model(sim.encoder.encode_pairs(np.full(its.size, c), its)))
            scored[c] = True
        if ranked:
            ranking.append(ranking_from_scores(np.array(ranked), np.stack(scores), ds.n_items, cfg.ranking_k, sets))
        eval_s += time.perf_counter() - te
        for row in log[-cfg.epochs:]:
            row["seconds"] = (te - ts) / cfg.epochs
        bar.set_postfix(loss=f"{log[-1]['train_loss']:.4f}", refresh=False)
    bar.close()
    model.train(was)
    te = time.perf_counter()
    # clients that never trained (no training data) keep the initial model
    rest = np.flatnonzero(~scored[test_users])
    if rest.size:
        logits[rest] = sim.predict(test[rest])
    if ranking is not None and (~scored).any():
        ranking.append(ranking_by_user(model, ds, sim.encoder, cfg.ranking_k, users=np.flatnonzero(~scored), sets=sets,
                                       exclude=cfg.ranking_exclusion))
    if cfg.sampled_k:
        rest_rows = cand_row[np.flatnonzero(~scored)]
        rest_rows = rest_rows[rest_rows >= 0]
        if rest_rows.size:
            cand_scores[rest_rows] = score_candidates(model, ds, sim.encoder, cand_users[rest_rows], cand_items[rest_rows])
    if not np.isfinite(logits).all():
        raise DivergenceError(f"{int((~np.isfinite(logits)).sum())} of {logits.size} test predictions are not finite")
    metrics = tier_metrics(ds.label[test], logits, sim.tiers.tier[test_users], test_users, sim.tiers.names)
    per_user = pd.concat(ranking) if ranking is not None else None
    if cfg.sampled_k:
        if not np.isfinite(cand_scores).all():
            raise DivergenceError(f"{int((~np.isfinite(cand_scores)).sum())} candidate scores are not finite")
        sampled = sampled_from_scores(cand_users, cand_scores, cfg.sampled_k)
    if ranking is not None:
        frame = ranking_frame(per_user, sim.tiers.tier, sim.tiers.names)
        metrics = TierMetrics(pd.concat([metrics.frame, frame], ignore_index=True), metrics.tier_names)
    if cfg.sampled_k:
        frame = sampled_frame(sampled, sim.tiers.tier, sim.tiers.names)
        metrics = TierMetrics(pd.concat([metrics.frame, frame], ignore_index=True), metrics.tier_names)
        per_user = sampled if per_user is None else per_user.join(sampled.drop(columns="n_relevant"), how="outer")
    scores = EvalScores.from_run(test_users, sim.tiers.tier[test_users], ds.label[test], logits, sim.tiers.names,
                                 sim.tiers.tier, per_user)
    rounds = pd.DataFrame(log).sort_values("round", kind="stable").reset_index(drop=True)
    metrics = sim._with_costs(metrics, rounds)
    eval_s += time.perf_counter() - te
    return RunResult(config=cfg, metrics=metrics, rounds=rounds, tiers=sim.tiers,
                     seconds={"load": sim.load_seconds, "train": train_s, "eval": eval_s},
                     peak_rss_mb=peak_rss_mb(), scores=scores)
