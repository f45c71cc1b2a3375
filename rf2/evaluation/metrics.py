"""Per-tier accuracy and fairness (RF² §4.4).

* :func:`auc` — exact ROC-AUC from pooled predictions (the Mann-Whitney statistic with average
  ranks, so tied scores count one half). No per-batch averaging.
* :class:`TierMetrics` — per-tier and overall metrics in the spirit of fairlearn's ``MetricFrame``:
  ``overall``, ``by_tier``, ``difference()``, ``ratio()``, and a tidy ``frame`` (one row per
  tier x metric) that pandas reads directly.
* :func:`relative_change` — Eq. 1: ``(β_p^t - β_0^t) / β_0^t`` per tier.
* :func:`mdac` — Eq. 2: the maximum over tier pairs of the difference in relative change, i.e.
  ``max_t rc_t - min_t rc_t``; 0 when every tier changes by the same fraction.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

OVERALL = "overall"


def auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Exact ROC-AUC; ``nan`` when only one class is present."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"auc: {y.size} labels but {s.size} scores")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks for ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y_true: np.ndarray, logit: np.ndarray) -> float:
    y = np.asarray(y_true, dtype=np.float64)
    z = np.asarray(logit, dtype=np.float64)
    return float(np.mean(np.logaddexp(0, z) - y * z)) if y.size else float("nan")


@dataclass
class TierMetrics:
    """Metrics for each tier and overall. ``frame`` columns: tier, metric, value, n_events, n_users."""

    frame: pd.DataFrame
    tier_names: tuple[str, ...]

    @property
    def by_tier(self) -> pd.DataFrame:
        """tier x metric (tiers in order low -> high)."""
        f = self.frame[self.frame["tier"] != OVERALL]
        return f.pivot(index="tier", columns="metric", values="value").reindex(list(self.tier_names))

    @property
    def overall(self) -> pd.Series:
        f = self.frame[self.frame["tier"] == OVERALL]
        return f.set_index("metric")["value"]

    def difference(self, metric: str = "auc") -> float:
        col = self.by_tier[metric]
        return float(col.max() - col.min())

    def ratio(self, metric: str = "auc") -> float:
        col = self.by_tier[metric]
        return float(col.min() / col.max())

    def table(self) -> pd.DataFrame:
        """tier (and overall) x metric, with sizes: for printing."""
        wide = self.frame.pivot(index="tier", columns="metric", values="value")
        sizes = self.frame.drop_duplicates("tier").set_index("tier")[["n_users", "n_events"]]
        return wide.join(sizes).reindex([*self.tier_names, OVERALL])


def tier_metrics(
    y: np.ndarray, logit: np.ndarray, event_tier: np.ndarray, event_user: np.ndarray, tier_names: tuple[str, ...]
) -> TierMetrics:
    """AUC and log loss per tier (pooled over the tier's events) and overall."""
    rows = []
    groups = [(name, event_tier == t) for t, name in enumerate(tier_names)] + [(OVERALL, np.ones_like(y, dtype=bool))]
    for name, m in groups:
        n_users = int(np.unique(event_user[m]).size)
        for metric, value in (("auc", auc(y[m], logit[m])), ("log_loss", log_loss(y[m], logit[m]))):
            rows.append((name, metric, value, int(m.sum()), n_users))
    return TierMetrics(pd.DataFrame(rows, columns=["tier", "metric", "value", "n_events", "n_users"]), tuple(tier_names))


def relative_change(optimised: TierMetrics, baseline: TierMetrics, metric: str = "auc") -> pd.Series:
    """RF² Eq. 1 per tier and overall: ``(β_p - β_0) / β_0``."""
    if optimised.tier_names != baseline.tier_names:
        raise ValueError(f"tiers differ: {optimised.tier_names} vs {baseline.tier_names}")
    p = pd.concat([optimised.by_tier[metric], pd.Series({OVERALL: optimised.overall[metric]})])
    b = pd.concat([baseline.by_tier[metric], pd.Series({OVERALL: baseline.overall[metric]})])
    return (p - b) / b


def mdac(optimised: TierMetrics | pd.Series, baseline: TierMetrics | None = None, metric: str = "auc") -> float:
    """RF² Eq. 2: ``max over tier pairs |rc_i - rc_j|`` = ``max(rc) - min(rc)`` over tiers.

    Pass two :class:`TierMetrics`, or one Series of per-tier relative changes (an ``overall`` entry,
    if present, is ignored)."""
    rc = relative_change(optimised, baseline, metric) if baseline is not None else optimised
    rc = rc.drop(OVERALL, errors="ignore")
    if rc.isna().any():
        return float("nan")
    return float(rc.max() - rc.min())
