"""FedEM's client side: elastic merge and local training of whole personal models
(``fedem-method.md`` §3, §4.1-4.2).

Each client keeps ``(p_u, Q^l_u, Θ_u)``: user embedding ``[d]``, a full local item table
``[n, d]`` and the adapter's weights. A client that holds a personalised global table ``G_u``:

* **round start** (§4.1, ``merge_start``): ``Q^l ← Q^l + ρ ⊙ (G - Q^l)`` with
  ``ρ = adapter_Θ([Q^l ; G - Q^l])`` row by row, no gradient;
* **every batch** (§4.2) takes two steps: (1) the adapter, on the loss with the merged table
  ``q^m = q^l + ρ (g - q^l)`` (``merge_forward``); (2) ``p`` and ``Q^l`` on the loss recomputed
  with the updated adapter (the gradient reaches ``q^l`` through the merge and through ``ρ``).

A client without ``G`` takes one plain step per batch on ``(p, Q^l)`` with ``q = q^l``. Two fresh
Adam optimisers per client per round (lr ``lr_embedding`` and ``lr_adapter``, betas
(0.9, 0.999)); the item table is dense, so Adam moves every row whose moments are non-zero
(§7 item 10). Batches and epochs follow :class:`~rf2.clients.local.LocalTraining` (FedEM: 10
epochs of 256, the cumulative-mean early stop). ``rho``: ``None`` = the adapter, or a fixed
number (the "no adapter" baseline; ``1`` with ``merge_forward = False`` is static replacement).

The loss is the mean binary cross-entropy of ``σ(pᵀq)`` per batch (computed from the logit; the
authors apply ``BCELoss`` to the sigmoid, which differs only where it saturates). A batch's loss
for the early stop and the log is the one of its last step (the backbone step).

Two engines, tested equal (``tests/test_fedem.py``): :func:`train_reference` (one client at a
time, ``torch.optim.Adam`` on full tensors, as the authors' code) and :func:`train_batched`
(all clients stacked, grouped into buckets by number of steps, lock-step with per-client masks,
the elementwise Adam of :mod:`rf2.clients.optim`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rf2.models.fcf import adapter_rho

from .batched import BatchedEngine, plan_buckets
from .local import LocalTraining, batch_orders, should_stop
from .optim import ClientOptimizer


@dataclass
class ClientModels:
    """The clients' personal models, stacked: ``P [C, d]``, ``Q [C, n, d]``, ``A``: the adapter's
    weights and biases, each ``[C, *shape]``."""

    P: torch.Tensor
    Q: torch.Tensor
    A: list[torch.Tensor]

    def select(self, idx) -> "ClientModels":
        return ClientModels(self.P[idx], self.Q[idx], [a[idx] for a in self.A])


@dataclass(frozen=True)
class FedEMTraining:
    local: LocalTraining
    lr_embedding: float = 0.1
    lr_adapter: float = 0.1
    rho: float | None = None  # None: the adapter; a number: fixed merge weight
    merge_forward: bool = True
    eps: float = 1e-8  # Adam's epsilon (tests use a larger one, see rf2.clients.optim)


def merge(Q: torch.Tensor, G: torch.Tensor, A: list[torch.Tensor], rho: float | None) -> torch.Tensor:
    """``Q + ρ ⊙ (G - Q)`` row by row (§3, elastic merge); ``[C, n, d]``."""
    r = adapter_rho(A, Q, G) if rho is None else torch.full(Q.shape[:2], float(rho))
    return Q + r[..., None] * (G - Q)


def _logits(P, Q, A, G, holder, items, cfg: FedEMTraining):
    """``[C, W]`` logits ``p_cᵀ q_{c,i}`` of each client's batch items (merged for holders)."""
    ar = torch.arange(Q.shape[0])[:, None]
    ql = Q[ar, items]
    if cfg.merge_forward and G is not None:
        g = G[ar, items]
        r = adapter_rho(A, ql, g) if cfg.rho is None else torch.full(ql.shape[:2], float(cfg.rho))
        q = torch.where(holder[:, None, None], ql + r[..., None] * (g - ql), ql)
    else:
        q = ql
    return (P[:, None, :] * q).sum(-1)


def train_batched(models: ClientModels, G: torch.Tensor | None, holder: torch.Tensor, items: torch.Tensor,
                  labels: torch.Tensor, ptr: torch.Tensor, contexts: Sequence, cfg: FedEMTraining,
                  slack: float = 0.25) -> tuple[ClientModels, torch.Tensor, torch.Tensor]:
    """All clients at once. ``items``/``labels``: ``[S]`` the round's samples grouped by client
    (``ptr``); ``G``: ``[C, n, d]`` (rows of non-holders unused) or ``None``; ``holder``: ``[C]``.
    Returns the trained models, each client's mean batch loss and its local epochs run."""
    plan = cfg.local
    C = holder.numel()
    counts = ptr[1:] - ptr[:-1]
    n_batches = torch.from_numpy(plan.n_batches(counts.numpy()))
    total = n_batches * plan.epochs * plan.steps
    emb_opt = ClientOptimizer("adam", cfg.lr_embedding, eps=cfg.eps)
    ad_opt = ClientOptimizer("adam", cfg.lr_adapter, eps=cfg.eps)
    out = ClientModels(models.P.clone(), models.Q.clone(), [a.clone() for a in models.A])
    losses = torch.zeros(C)
    epochs_run = torch.zeros(C, dtype=torch.long)
    train_adapter = cfg.rho is None and cfg.merge_forward and G is not None
    for b in (torch.from_numpy(x) for x in plan_buckets(total.numpy(), slack)):
        Cb = b.numel()
        order = BatchedEngine.batch_positions(plan, ptr, b, counts, n_batches, contexts)
        P, Q, A = out.P[b], out.Q[b], [a[b] for a in out.A]
        Gb = None if G is None else G[b]
        hb = holder[b]
        es, as_ = emb_opt.init({"P": P, "Q": Q}, clients=Cb), ad_opt.init({str(i): a for i, a in enumerate(A)}, clients=Cb)
        nb, T = n_batches[b], total[b]
        ar = torch.arange(Cb)
        stopped = torch.zeros(Cb, dtype=torch.bool)
        seen_sum = torch.zeros(Cb, dtype=torch.float64)
        seen_n = torch.zeros(Cb, dtype=torch.float64)
        ep_sum = torch.zeros(Cb, dtype=torch.float64)
        ep_n = torch.zeros(Cb, dtype=torch.float64)
        prev = {"per_epoch": torch.zeros(Cb, dtype=torch.float64), "cumulative_mean": torch.zeros(Cb, dtype=torch.float64)}
        done = torch.zeros(Cb, dtype=torch.long)
        for s in range(int(T.max())):
            active = (s < T) & ~stopped
            if not bool(active.any()):
                break
            bstep = s // plan.steps
            e = torch.div(bstep, nb, rounding_mode="floor").clamp_max(plan.epochs - 1)
            pos = order[ar, e, bstep % nb]
            valid = (pos >= 0) & active[:, None]
            it = torch.where(valid, items[pos.clamp_min(0)], 0)
            y = torch.where(valid, labels[pos.clamp_min(0)], 0.0)
            w = valid.to(torch.float32) / valid.sum(1, keepdim=True).clamp_min(1).to(torch.float32)

            def batch_loss(P_, Q_, A_):
                logit = _logits(P_, Q_, A_, Gb, hb, it, cfg)
                return (F.binary_cross_entropy_with_logits(logit, y, reduction="none") * w).sum(1)  # [Cb]

            if train_adapter and bool((hb & active).any()):  # step 1: the adapter (holders only)
                leaves = [a.detach().requires_grad_(True) for a in A]
                grads = torch.autograd.grad(batch_loss(P, Q, leaves).sum(), leaves)
                inc, as_ = ad_opt.increments({str(i): g for i, g in enumerate(grads)}, as_, active=active & hb)
                A = [a + inc[str(i)] for i, a in enumerate(A)]
            lp, lq = P.detach().requires_grad_(True), Q.detach().requires_grad_(True)  # step 2: p and Q^l
            value = batch_loss(lp, lq, A)
            gp, gq = torch.autograd.grad(value.sum(), [lp, lq])
            inc, es = emb_opt.increments({"P": gp, "Q": gq}, es, active=active)
            P, Q = P + inc["P"], Q + inc["Q"]
            if s % plan.steps == plan.steps - 1:  # a batch's last step: its loss counts
                v = torch.where(active, value.detach().to(torch.float64), 0.0)
                seen_sum += v
                seen_n += active.to(torch.float64)
                ep_sum += v
                ep_n += active.to(torch.float64)
            ends = active & ((s + 1) % (nb * plan.steps) == 0)
            if bool(ends.any()):
                if plan.early_stop != "none":
                    cur = {"per_epoch": ep_sum / ep_n.clamp_min(1), "cumulative_mean": seen_sum / seen_n.clamp_min(1)}
                    last = prev[plan.early_stop]
                    rel = (cur[plan.early_stop] - last).abs() / (last + 1e-5).abs()
                    stopped |= ends & (done > 0) & (rel < plan.threshold)
                    for k in prev:
                        prev[k] = torch.where(ends, cur[k], prev[k])
                done += ends.long()
                ep_sum = torch.where(ends, 0.0, ep_sum)
                ep_n = torch.where(ends, 0.0, ep_n)
        out.P[b], out.Q[b] = P.detach(), Q.detach()
        for i, a in enumerate(A):
            out.A[i][b] = a.detach()
        losses[b] = (seen_sum / seen_n.clamp_min(1)).to(torch.float32)
        epochs_run[b] = done
    return out, losses, epochs_run


def train_reference(models: ClientModels, G: torch.Tensor | None, holder: torch.Tensor, items: torch.Tensor,
                    labels: torch.Tensor, ptr: torch.Tensor, contexts: Sequence,
                    cfg: FedEMTraining) -> tuple[ClientModels, torch.Tensor, torch.Tensor]:
    """One client at a time, as the authors' code: full tensors, two ``torch.optim.Adam``."""
    plan = cfg.local
    C = holder.numel()
    out = ClientModels(models.P.clone(), models.Q.clone(), [a.clone() for a in models.A])
    losses, epochs_run = torch.zeros(C), torch.zeros(C, dtype=torch.long)
    train_adapter = cfg.rho is None and cfg.merge_forward and G is not None
    for c in range(C):
        a0, a1 = int(ptr[c]), int(ptr[c + 1])
        it_c, y_c = items[a0:a1], labels[a0:a1]
        n = a1 - a0
        p = out.P[c : c + 1].clone().requires_grad_(True)
        q = out.Q[c : c + 1].clone().requires_grad_(True)
        ad = [a[c : c + 1].clone().requires_grad_(True) for a in out.A]
        g = None if G is None else G[c : c + 1]
        h = holder[c : c + 1]
        emb = torch.optim.Adam([p, q], lr=cfg.lr_embedding, eps=cfg.eps)
        ada = torch.optim.Adam(ad, lr=cfg.lr_adapter, eps=cfg.eps)
        size = n if plan.full_batch else plan.batch_size
        seen, ep_means, cum = [], [], []
        for order in batch_orders(plan, contexts[c].seed if not plan.full_batch else 0, n):
            this = []
            for a in range(0, n, size):
                idx = torch.from_numpy(order[a : a + size])
                it, y = it_c[idx][None], y_c[idx][None]
                for _ in range(plan.steps):
                    if train_adapter and bool(h[0]):
                        ada.zero_grad()
                        F.binary_cross_entropy_with_logits(_logits(p.detach(), q.detach(), ad, g, h, it, cfg), y).backward()
                        ada.step()
                    emb.zero_grad()
                    loss = F.binary_cross_entropy_with_logits(_logits(p, q, [x.detach() for x in ad], g, h, it, cfg), y)
                    loss.backward()
                    emb.step()
                this.append(float(loss.detach()))
            seen += this
            ep_means.append(sum(this) / len(this))
            cum.append(sum(seen) / len(seen))
            if should_stop(plan, ep_means, cum):
                break
        out.P[c], out.Q[c] = p.detach()[0], q.detach()[0]
        for i, x in enumerate(ad):
            out.A[i][c] = x.detach()[0]
        losses[c] = sum(seen) / len(seen)
        epochs_run[c] = len(ep_means)
    return out, losses, epochs_run


def sample_layout(X: torch.Tensor, y: torch.Tensor, item_col: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The round's ``(items [S], labels [S])`` from a gathered batch's encoded rows."""
    return X[:, item_col].long(), y.to(torch.float32)


def scores(models: ClientModels, G: torch.Tensor | None, holder: torch.Tensor, items: np.ndarray,
           rho: float | None, merge_eval: bool = True) -> np.ndarray:
    """``[C, k]`` logits of each client's candidate ``items`` with its own model; holders score
    with their table merged once with their ``G`` (§5)."""
    it = torch.from_numpy(np.asarray(items, dtype=np.int64))
    ar = torch.arange(it.shape[0])[:, None]
    with torch.no_grad():
        ql = models.Q[ar, it]
        if G is not None and merge_eval:
            g = G[ar, it]
            r = adapter_rho(models.A, ql, g) if rho is None else torch.full(ql.shape[:2], float(rho))
            ql = torch.where(holder[:, None, None], ql + r[..., None] * (g - ql), ql)
        return (models.P[:, None, :] * ql).sum(-1).numpy()
