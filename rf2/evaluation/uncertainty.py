"""Uncertainty of per-tier metrics, relative change (RF² Eq. 1) and MDAC (Eq. 2): a paired bootstrap
over users, seeds combined, and the noise floor.

**Users are the unit.** A tier's AUC pools its users' test events; its NDCG@K averages its users'
values. A bootstrap replicate draws, *within each tier*, as many users as the tier has, with
replacement (a stratified bootstrap: tier sizes stay fixed, as they are by design), and keeps every
test event of each drawn user (a user drawn twice counts twice). The optimised run and its
``none`` baseline share the test set and the tiers, so **the same draw** is applied to both (a
paired bootstrap): the noise common to both runs' users cancels in the relative change.

For AUC the replicate is computed without copying events: a drawn user's multiplicity becomes a
weight on each of its events, and the weighted Mann-Whitney statistic (ties count one half) is
evaluated for all replicates of a block at once from one sort of the scores
(:func:`weighted_auc`). A plain implementation that concatenates the drawn users' events and calls
:func:`rf2.evaluation.auc` gives the same numbers (tests/test_uncertainty.py).

**Seeds.** With runs at several seeds, a cell (mapping × optimisation) reports

* ``mdac`` — the MDAC of the *seed-averaged* per-tier changes, ``max_t mean_s rc_{s,t} − min_t
  mean_s rc_{s,t}``: the estimate of the systematic unfairness (seed noise averages out first);
* ``mean_mdac`` — the mean of the per-seed MDACs. Because ``max − min`` is convex,
  ``mean_mdac ≥ mdac`` always; the gap is the part of a single-seed MDAC that is noise. The
  paper reports single-seed MDACs, i.e. this quantity.

Both get percentile intervals from the same replicates. Each replicate resamples users
independently for every seed (tiers differ between seeds under a seeded mapping); with three or
more seeds it also resamples the seeds themselves (a two-level bootstrap), so the interval holds
the training noise that differs from seed to seed, not only the users'.

**Noise floor.** The MDAC that training randomness alone produces: the ``none`` run retrained with
another model initialisation, selection order and client randomness but the *same tiers*
(``replicate = 1``) against the ``none`` run (``replicate = 0``), combined over seeds exactly like
a cell. A sweep adds these runs (``noise_floor = true``, the default). A cell's verdict
(:func:`floor_test`) compares its MDAC with the floor's replicate by replicate — both use the same
user draws (keyed by the shared baseline) and seed draws — and is ``above floor`` when the cell
exceeds the floor in at least 97.5 % of replicates (the 2.5 % quantile of the difference is above
0), else ``within noise``. Comparing the difference rather than an interval with a point removes
the upward bias noise gives every MDAC and does not trust a floor that happened to land near 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import hashlib
import warnings

import numpy as np
from scipy import sparse

from .metrics import OVERALL
from .scores import EvalScores

#: Work per block of replicates (weights held in memory at once, float64 entries).
BLOCK_ENTRIES = 20_000_000
ABOVE, WITHIN, NO_FLOOR, NO_SCORES = "above floor", "within noise", "no floor", "no scores"


# -- resampling -------------------------------------------------------------------------------------
def stratified_draws(unit_stratum: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, n_units]`` indices of drawn units: replicate ``b`` fills the positions of each
    stratum's units with a draw, with replacement, from that stratum."""
    unit_stratum = np.asarray(unit_stratum)
    out = np.empty((n_boot, unit_stratum.size), dtype=np.int64)
    for s in np.unique(unit_stratum):
        members = np.flatnonzero(unit_stratum == s)
        out[:, members] = members[rng.integers(0, members.size, size=(n_boot, members.size))]
    return out


def draw_counts(draws: np.ndarray, n_units: int) -> np.ndarray:
    """Multiplicity of every unit in each replicate: ``[n_boot, n_units]``."""
    B = draws.shape[0]
    flat = (draws + (np.arange(B)[:, None] * n_units)).ravel()
    return np.bincount(flat, minlength=B * n_units).reshape(B, n_units).astype(np.float64)


# -- weighted metrics ------------------------------------------------------------------------------
def weighted_auc(score: np.ndarray, label: np.ndarray, weights: np.ndarray, presorted: bool = False) -> np.ndarray:
    """ROC-AUC for each row of ``weights`` (``[B, n]`` non-negative event weights): the weighted
    Mann-Whitney statistic, tied scores counting one half. ``nan`` where a class has no weight."""
    score = np.asarray(score, dtype=np.float64)
    label = np.asarray(label).astype(bool)
    W = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if not presorted:
        order = np.argsort(score, kind="stable")
        score, label, W = score[order], label[order], W[:, order]
    if score.size == 0:
        return np.full(W.shape[0], np.nan)
    starts = np.r_[0, np.flatnonzero(np.diff(score)) + 1]
    Wp = W * label
    P = np.add.reduceat(Wp, starts, axis=1)
    N = np.add.reduceat(W - Wp, starts, axis=1)
    below = np.cumsum(N, axis=1) - N
    num = (P * (below + 0.5 * N)).sum(axis=1)
    den = P.sum(axis=1) * N.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


#: Largest (tie groups x users) matrix built for the user-pair form of the AUC.
PAIR_ENTRIES = 30_000_000


def _pair_counts(score: np.ndarray, label: np.ndarray, unit: np.ndarray, n_units: int):
    """The AUC in user-pair form, for events sorted by score: ``K[u, v]`` = the number of (positive
    of ``u``, negative of ``v``) pairs ranked correctly, ties counting one half. A replicate with
    user multiplicities ``c`` then has ``AUC = cᵀKc / ((c·n_pos)(c·n_neg))``: one matrix product
    for all replicates instead of a pass over the events. ``None`` when the matrix would be too big."""
    units, local = np.unique(unit, return_inverse=True)
    U = units.size
    if score.size == 0:
        return None
    starts = np.r_[0, np.flatnonzero(np.diff(score)) + 1]
    G = starts.size
    if G * U > PAIR_ENTRIES or U * U > PAIR_ENTRIES:
        return None
    group = np.repeat(np.arange(G), np.diff(np.r_[starts, score.size]))
    pos = np.flatnonzero(label)
    if pos.size == 0:
        return None
    gp, kpos = np.unique(group[pos], return_inverse=True)  # only groups holding a positive are needed
    Kp = gp.size
    # M[k, v] = negatives of v below positive group k (ties one half), built from each negative's
    # first positive group above it (+1 from there on) or its own group (+0.5 there, +0.5 after)
    gn, vn = group[~label], local[~label]
    right = np.searchsorted(gp, gn, side="right")
    tie = (right > 0) & (gp[np.maximum(right - 1, 0)] == gn)
    rows = np.r_[right[~tie], right[tie] - 1, right[tie]]
    cols = np.r_[vn[~tie], vn[tie], vn[tie]]
    w = np.r_[np.ones(int((~tie).sum())), np.full(2 * int(tie.sum()), 0.5)]
    M = np.cumsum(np.bincount(rows * U + cols, weights=w, minlength=(Kp + 1) * U).reshape(Kp + 1, U), axis=0)[:Kp]
    P = sparse.csr_matrix((np.ones(pos.size, dtype=np.float32), (local[pos], kpos)), shape=(U, gp.size))
    K = np.asarray(P @ M, dtype=np.float32)  # half-integers below 2**24: exact
    npos = np.bincount(local[pos], minlength=U).astype(np.float64)
    nneg = np.bincount(local[~label], minlength=U).astype(np.float64)
    return units, K, npos, nneg


#: Users in a group above which, when the exact user-pair matrix does not fit, AUC replicates are
#: linearised (see :func:`_linear_parts`) instead of recomputed event by event.
LINEAR_MIN_UNITS = 2000


def _linear_parts(score: np.ndarray, label: np.ndarray, unit: np.ndarray, n_units: int):
    """First-order (influence) form of the weighted AUC for events sorted by score.

    With user multiplicities ``c = 1 + δ``, the numerator ``cᵀKc`` equals ``num0 + δ·(r + q) +
    δᵀKδ``, where ``r_u`` sums the placements of ``u``'s positives (negatives below, ties one half)
    and ``q_u`` those of its negatives (positives above). Dropping ``δᵀKδ`` — relatively
    ``O(1/users)`` — gives replicates in ``O(users)`` each, exact at ``δ = 0``; the denominator
    ``(c·n_pos)(c·n_neg)`` stays exact. Used for groups too large for the pair matrix."""
    starts = np.r_[0, np.flatnonzero(np.diff(score)) + 1]
    sizes = np.diff(np.r_[starts, score.size])
    group = np.repeat(np.arange(starts.size), sizes)
    P = np.bincount(group, weights=label.astype(np.float64), minlength=starts.size)
    N = sizes - P
    below = np.cumsum(N) - N  # negatives strictly below each tie group
    above = P.sum() - np.cumsum(P)  # positives strictly above
    place = np.where(label, below[group] + 0.5 * N[group], above[group] + 0.5 * P[group])
    rq = np.bincount(unit, weights=place, minlength=n_units)
    npos = np.bincount(unit[label], minlength=n_units).astype(np.float64)
    nneg = np.bincount(unit[~label], minlength=n_units).astype(np.float64)
    num0 = float(place[label].sum())
    present = np.flatnonzero((npos + nneg) > 0)
    return present, rq[present], npos[present], nneg[present], num0


class TierResampler:
    """One run's metric per tier (and overall), for the full data and for weighted replicates.

    ``units``: the users that carry this metric (test users for AUC and log loss, ranked users for
    ranking metrics), ``unit_tier`` their tiers; :meth:`values` takes per-unit multiplicities."""

    def __init__(self, es: EvalScores, metric: str, method: str = "auto"):
        """``method`` (AUC only): ``exact`` recomputes every replicate (user-pair matrix, or event
        weights); ``linear`` uses :func:`_linear_parts`; ``auto``: exact unless a group has more
        than :data:`LINEAR_MIN_UNITS` users and its pair matrix does not fit in memory."""
        if method not in ("auto", "exact", "linear"):
            raise ValueError(f"method must be auto, exact or linear, got {method!r}")
        self.metric, self.n_tiers = metric, len(es.tier_names)
        if metric in ("auc", "log_loss"):
            self.units, inverse = np.unique(es.user, return_inverse=True)
            self.unit_tier = es.user_tier[self.units].astype(np.int64)
            order = np.argsort(es.score, kind="stable")
            s = es.score[order].astype(np.float64)
            y = es.label[order].astype(bool)
            u = inverse[order]
            groups = [np.flatnonzero(es.tier[order] == t) for t in range(self.n_tiers)] + [np.arange(s.size)]
            self._events = [(s[g], y[g], u[g]) for g in groups]  # each group stays sorted by score
            self._pairs = [None] * len(self._events)
            if metric == "auc":
                # one user-pair matrix for all events; a tier's is its block (same users, same pairs)
                whole = _pair_counts(*self._events[-1], self.n_units)
                if whole is not None:
                    units, K, npos, nneg = whole
                    for t in range(self.n_tiers):
                        m = self.unit_tier[units] == t
                        self._pairs[t] = (units[m], K[np.ix_(m, m)], npos[m], nneg[m])
                    self._pairs[-1] = whole
            self._linear = [None] * len(self._events)
            self._lin_cols: dict = {}
            if metric == "auc" and method != "exact":
                for j, (v, y, u) in enumerate(self._events):
                    big = self._pairs[j] is None and np.unique(u).size > LINEAR_MIN_UNITS
                    if method == "linear" or big:
                        self._pairs[j] = None
                        self._linear[j] = _linear_parts(v, y, u, self.n_units)
            # every linear group's (r + q, n_pos, n_neg) as columns over all users: one product per block
            lin = [j for j, part in enumerate(self._linear) if part is not None]
            self._lin_cols = {j: 3 * i for i, j in enumerate(lin)}
            self._lin_V = np.zeros((self.n_units, 3 * len(lin)))
            for j in lin:
                units, rq, npos, nneg, _ = self._linear[j]
                k = self._lin_cols[j]
                self._lin_V[units, k], self._lin_V[units, k + 1], self._lin_V[units, k + 2] = rq, npos, nneg
            if metric == "log_loss":
                z = s
                self._loss = np.logaddexp(0, z) - y * z
                self._events = [(self._loss[g], y[g], u[g]) for g in groups]
        elif metric in es.ranking:
            self.units = np.asarray(es.ranking_user, dtype=np.int64)
            self.unit_tier = es.user_tier[self.units].astype(np.int64)
            self._values = np.asarray(es.ranking[metric], dtype=np.float64)
        else:
            raise ValueError(f"metric {metric!r} cannot be resampled from this run's scores; it has {es.metrics}")

    @property
    def n_units(self) -> int:
        return self.units.size

    def values(self, counts: np.ndarray | None = None) -> np.ndarray:
        """``[B, n_tiers + 1]`` (last column: overall) for unit multiplicities ``counts`` ``[B,
        n_units]``; ``counts=None`` gives the run's own values (``[n_tiers + 1]``)."""
        single = counts is None
        C = np.ones((1, self.n_units)) if single else np.atleast_2d(counts)
        out = np.empty((C.shape[0], self.n_tiers + 1))
        if self.metric in ("auc", "log_loss"):
            R = C @ self._lin_V if self.metric == "auc" and self._lin_cols else None
            for j, (v, y, u) in enumerate(self._events):
                if self.metric == "auc" and self._linear[j] is not None:
                    _, rq, _, _, num0 = self._linear[j]
                    k = self._lin_cols[j]
                    den = R[:, k + 1] * R[:, k + 2]
                    num = num0 + R[:, k] - rq.sum()
                    with np.errstate(invalid="ignore", divide="ignore"):
                        out[:, j] = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
                    continue
                if self.metric == "auc" and self._pairs[j] is not None:
                    units, K, npos, nneg = self._pairs[j]
                    Cu = C[:, units]
                    den = (Cu @ npos) * (Cu @ nneg)
                    # float32 matmul (2x faster); relative error ~1e-7, far below any interval's width
                    num = ((Cu.astype(np.float32) @ K.astype(np.float32, copy=False)).astype(np.float64) * Cu).sum(axis=1)
                    with np.errstate(invalid="ignore", divide="ignore"):
                        out[:, j] = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
                    continue
                W = C[:, u]
                if self.metric == "auc":
                    out[:, j] = weighted_auc(v, y, W, presorted=True)
                else:
                    tot = W.sum(axis=1)
                    with np.errstate(invalid="ignore", divide="ignore"):
                        out[:, j] = np.where(tot > 0, (W * v).sum(axis=1) / np.where(tot > 0, tot, 1), np.nan)
        else:
            for t in range(self.n_tiers + 1):
                m = self.unit_tier == t if t < self.n_tiers else np.ones(self.n_units, dtype=bool)
                W = C[:, m]
                tot = W.sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[:, t] = np.where(tot > 0, W @ self._values[m] / np.where(tot > 0, tot, 1), np.nan)
        return out[0] if single else out


def resampler(es: EvalScores, metric: str) -> TierResampler:
    """The run's :class:`TierResampler` for ``metric``, built once per scores object (a baseline
    serves every optimisation of its mapping and seed)."""
    cache = es.__dict__.setdefault("_resamplers", {})
    if metric not in cache:
        cache[metric] = TierResampler(es, metric)
    return cache[metric]


def _stable_int(k) -> int:
    """A process-independent integer for a draw key (Python's ``hash`` of a str is salted)."""
    if isinstance(k, (int, np.integer)) and k >= 0:
        return int(k)
    return int(hashlib.sha256(repr(k).encode()).hexdigest()[:15], 16)


# -- pairs and cells -------------------------------------------------------------------------------
def _check_pair(opt: EvalScores, base: EvalScores) -> None:
    if (opt.tier_names != base.tier_names or opt.user.shape != base.user.shape or not np.array_equal(opt.user, base.user)
            or not np.array_equal(opt.label, base.label) or not np.array_equal(opt.user_tier, base.user_tier)):
        raise ValueError("paired bootstrap: the optimised run and its baseline must share test events, labels and tiers "
                         "(same dataset, mapping and seed)")


def _rc(p: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (p - b) / b


def _mdac(rc: np.ndarray) -> np.ndarray:
    """MDAC over the tier columns (all but the last, overall)."""
    t = rc[..., :-1]
    return np.max(t, axis=-1) - np.min(t, axis=-1)


def pair_replicates(opt: EvalScores, base: EvalScores, metric: str, n_boot: int, rng: np.random.Generator | None = None,
                    key: tuple | None = None):
    """Point values and ``n_boot`` paired replicates of one run against its baseline.

    ``rng`` draws the users; or ``key`` (e.g. ``(boot_seed, run seed)``) seeds the draw and lets
    every run compared with the same baseline reuse it (common random numbers), so the baseline's
    replicates are computed once per baseline, not once per optimisation.
    Returns ``(point, reps)``: dicts with ``opt``, ``base`` and ``rc`` (per tier + overall; ``reps``
    with a leading replicate axis)."""
    _check_pair(opt, base)
    rb = resampler(base, metric)
    ro = TierResampler(opt, metric)  # used once: not kept
    if not np.array_equal(ro.units, rb.units):
        raise ValueError(f"paired bootstrap: the runs rank different users for {metric!r}")
    po, pb = ro.values(), rb.values()
    cache = base.__dict__.setdefault("_base_replicates", {})
    ck = (metric, n_boot, key)
    if key is not None and ck in cache:
        blocks, Bs = cache[ck]
    else:
        if key is not None:
            rng = np.random.default_rng([_stable_int(k) for k in key])
        elif rng is None:
            raise ValueError("pair_replicates: give rng or key")
        n_events = max(1, sum(len(e[0]) for e in getattr(rb, "_events", [])) or rb.n_units)
        block = max(1, min(n_boot, BLOCK_ENTRIES // max(n_events, rb.n_units)))
        blocks, done = [], 0
        while done < n_boot:
            b = min(block, n_boot - done)
            blocks.append(draw_counts(stratified_draws(rb.unit_tier, b, rng), rb.n_units).astype(np.float32))
            done += b
        Bs = np.concatenate([rb.values(c.astype(np.float64)) for c in blocks])
        if key is not None:
            cache[ck] = (blocks, Bs)
    O = np.concatenate([ro.values(c.astype(np.float64)) for c in blocks])
    return {"opt": po, "base": pb, "rc": _rc(po, pb)}, {"opt": O, "base": Bs, "rc": _rc(O, Bs)}


@dataclass
class CellEstimate:
    """A cell's estimates over its seeds: per-tier changes (seed mean), MDAC of the mean, mean MDAC;
    each with a percentile interval. Arrays are ``[n_tiers + 1]`` (last: overall)."""

    tier_names: tuple[str, ...]
    n_seeds: int
    rc: np.ndarray
    rc_lo: np.ndarray
    rc_hi: np.ndarray
    mdac: float
    mdac_lo: float
    mdac_hi: float
    mean_mdac: float
    mean_mdac_lo: float
    mean_mdac_hi: float
    seed_mdac: np.ndarray  # each seed's own MDAC
    seed_mdac_lo: np.ndarray
    seed_mdac_hi: np.ndarray
    resampled_seeds: bool
    mdac_reps: np.ndarray | None = None  # [n_boot] replicates of ``mdac``
    seed_mdac_reps: np.ndarray | None = None  # [n_seeds, n_boot] replicates of each seed's MDAC


def cell_estimate(pairs: list[tuple[EvalScores, EvalScores]], metric: str = "auc", n_boot: int = 1000,
                  level: float = 0.95, seed: int = 0, resample_seeds: bool | None = None,
                  keys: list | None = None) -> CellEstimate:
    """Bootstrap one cell from its ``(optimised, baseline)`` pairs, one per seed (module docstring).

    ``keys`` (one per pair, e.g. the run seed): draw each pair's users from ``(seed, key)``, shared
    by every cell with the same baseline (see :func:`pair_replicates`)."""
    if not pairs:
        raise ValueError("cell_estimate: no (optimised, baseline) pairs")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot < 10:
        raise ValueError(f"n_boot must be >= 10, got {n_boot}")
    rng = np.random.default_rng(seed)
    S = len(pairs)
    if keys is not None and len(keys) != len(pairs):
        raise ValueError(f"cell_estimate: {len(keys)} keys for {len(pairs)} pairs")
    points, reps = zip(*(pair_replicates(o, b, metric, n_boot, rng if keys is None else None,
                                         None if keys is None else (seed, keys[i]))
                         for i, (o, b) in enumerate(pairs)))
    rc_point = np.stack([p["rc"] for p in points])  # [S, T+1]
    rc_reps = np.stack([r["rc"] for r in reps])  # [S, B, T+1]
    resample_seeds = S >= 3 if resample_seeds is None else resample_seeds
    if resample_seeds:
        pick = rng.integers(0, S, size=(n_boot, S))  # seeds drawn for each replicate
        col = np.stack([rng.permutation(n_boot) for _ in range(S)], axis=1)  # independent user draws per slot
        chosen = rc_reps[pick, col]  # [B, S, T+1]
    else:
        chosen = np.transpose(rc_reps, (1, 0, 2))
    with warnings.catch_warnings():  # a tier without positives or negatives has no AUC: nan, said by the caller
        warnings.simplefilter("ignore", RuntimeWarning)
        return _summarise(pairs, rc_point, rc_reps, chosen, level, S, resample_seeds)


def _summarise(pairs, rc_point, rc_reps, chosen, level, S, resample_seeds) -> CellEstimate:
    mean_rc = np.nanmean(chosen, axis=1) if S > 1 else chosen[:, 0]
    a = (1 - level) / 2 * 100
    q = lambda x, axis=0: (np.nanpercentile(x, a, axis=axis), np.nanpercentile(x, 100 - a, axis=axis))  # noqa: E731
    rc_lo, rc_hi = q(mean_rc)
    mdac_reps = _mdac(mean_rc)
    mean_mdac_reps = _mdac(chosen).mean(axis=1)
    seed_mdac_reps = _mdac(rc_reps)  # [S, B]
    s_lo, s_hi = q(seed_mdac_reps, axis=1)
    m_lo, m_hi = q(mdac_reps)
    mm_lo, mm_hi = q(mean_mdac_reps)
    rc_mean = rc_point.mean(axis=0)
    return CellEstimate(pairs[0][0].tier_names, S, rc_mean, rc_lo, rc_hi, float(_mdac(rc_mean)), float(m_lo), float(m_hi),
                        float(_mdac(rc_point).mean()), float(mm_lo), float(mm_hi), _mdac(rc_point), s_lo, s_hi,
                        bool(resample_seeds), mdac_reps, seed_mdac_reps)


def floor_test(cell_reps: np.ndarray, floor_reps: np.ndarray, level: float = 0.95) -> tuple[str, float]:
    """Is a cell's MDAC above the noise floor? Both are replicated with the same user draws (they
    share the baseline, and draws are keyed by it) and the same seed draws, so their difference is
    paired and the upward bias that noise gives every MDAC cancels. Returns the verdict (``above
    floor`` when the ``(1 - level) / 2`` quantile of ``cell − floor`` is above 0) and
    ``p_within``, the share of replicates in which the cell does not exceed the floor."""
    if cell_reps is None or floor_reps is None or len(cell_reps) != len(floor_reps):
        return NO_FLOOR, float("nan")
    with np.errstate(invalid="ignore"):  # a replicate without a value (a tier with one class) is dropped
        d = np.asarray(cell_reps, dtype=float) - np.asarray(floor_reps, dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return NO_SCORES, float("nan")
    p_within = float((d <= 0).mean())
    lo = np.percentile(d, (1 - level) / 2 * 100)
    return (ABOVE if lo > 0 else WITHIN), p_within


def verdict(mdac_lo: float, floor: float | None) -> str:
    """Without replicates (e.g. a floor computed elsewhere): ``above floor`` when the interval's
    lower end exceeds the noise floor's MDAC. :func:`floor_test` is the paired test used in tables."""
    if mdac_lo is None or not np.isfinite(mdac_lo):
        return NO_SCORES
    if floor is None or not np.isfinite(floor):
        return NO_FLOOR
    return ABOVE if mdac_lo > floor else WITHIN


__all__ = ["ABOVE", "CellEstimate", "NO_FLOOR", "NO_SCORES", "OVERALL", "TierResampler", "WITHIN", "cell_estimate",
           "draw_counts", "floor_test", "pair_replicates", "stratified_draws", "verdict", "weighted_auc"]
