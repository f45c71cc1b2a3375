"""How heterogeneous are the tiers? (RF² §3.2, Figure 2 and Figure 4.)

For a tier assignment and an interaction log this computes:

* users and clicks per tier, and the tier's *data volume* (given the training events): training
  events and training clicks, training events per user (mean and quartiles), and the tier's share
  of all training events (the ``random`` mapping balances it; Algorithm 1 need not);
* for the top-N most clicked items, each tier's *share*: the fraction of the tier's clicks that
  go to the item (the paper's Figure 4: under random mapping the bars of a group are equal);
* the Jensen-Shannon divergence (base 2, in [0, 1]) between every pair of tiers' item-click
  distributions, and their mean;
* the mutual information between tier and item of a random click, in bits (the generalised JS
  divergence of the tiers' distributions weighted by their click mass);
* a chi-square test of tier x item independence (``scipy.stats.chi2_contingency``) over the items
  with at least ``min_item_clicks`` clicks, with Cramér's V as an effect size (with tens of
  thousands of clicks any difference is "significant"; V says how large it is).

Note that plug-in divergences are biased upwards on finite data: a random mapping does not give 0.
Compare a mapping against ``random`` on the same data, as the paper does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency
from scipy.spatial.distance import jensenshannon

from .base import TierAssignment


@dataclass
class HeterogeneityReport:
    mapping: str
    tier_names: tuple[str, ...]
    users_per_tier: np.ndarray
    clicks_per_tier: np.ndarray
    top_items: pd.DataFrame  # columns: item, rank, tier, share
    jsd: pd.DataFrame  # tier x tier Jensen-Shannon divergence (base 2)
    mean_jsd: float
    mutual_information: float  # bits
    chi2: float
    p_value: float
    dof: int
    cramers_v: float
    extra: dict = field(default_factory=dict)
    #: per tier (rows in tier order): train_events, train_clicks, train_events_per_user_{mean,q25,median,q75},
    #: train_event_share; ``None`` when the report was made without the training split
    volume: pd.DataFrame | None = None

    def summary(self) -> dict[str, float]:
        out = {"mapping": self.mapping}
        for name, n, c in zip(self.tier_names, self.users_per_tier, self.clicks_per_tier):
            out[f"users_{name}"] = int(n)
            out[f"clicks_{name}"] = int(c)
        if self.volume is not None:
            for col in self.volume.columns:
                for name in self.tier_names:
                    v = self.volume.loc[name, col]
                    out[f"{col}_{name}"] = int(v) if col in ("train_events", "train_clicks") else float(v)
        out.update(mean_jsd=self.mean_jsd, mutual_information_bits=self.mutual_information,
                   chi2=self.chi2, chi2_dof=self.dof, chi2_p_value=self.p_value, cramers_v=self.cramers_v)
        return out

    def to_text(self) -> str:
        lines = [f"tier mapping: {self.mapping}"]
        tiers = pd.DataFrame({"users": self.users_per_tier, "clicks": self.clicks_per_tier}, index=list(self.tier_names))
        if self.volume is not None:
            v = self.volume
            tiers["train events"] = v["train_events"]
            tiers["train clicks"] = v["train_clicks"]
            tiers["events/user mean"] = v["train_events_per_user_mean"].round(1)
            tiers["q25 / median / q75"] = [f"{a:g} / {b:g} / {c:g}" for a, b, c in
                                           v[["train_events_per_user_q25", "train_events_per_user_median",
                                              "train_events_per_user_q75"]].to_numpy()]
            tiers["share of train events"] = v["train_event_share"].map(lambda x: f"{x:.1%}")
        lines += [tiers.to_string(), ""]
        share = self.top_items.pivot(index="rank", columns="tier", values="share")[list(self.tier_names)]
        share.index = [f"#{r + 1} item {i}" for r, i in zip(share.index, self.top_items.drop_duplicates("rank")["item"])]
        lines += [f"share of each tier's clicks going to the top-{len(share)} items:", share.round(4).to_string(), ""]
        lines += ["Jensen-Shannon divergence between tiers' item distributions (base 2):", self.jsd.round(4).to_string(), ""]
        lines.append(f"mean pairwise JSD        {self.mean_jsd:.4f}")
        lines.append(f"mutual information       {self.mutual_information:.4f} bits (tier; clicked item)")
        lines.append(f"chi-square independence  chi2={self.chi2:.1f}  dof={self.dof}  p={self.p_value:.3g}  Cramer's V={self.cramers_v:.4f}")
        return "\n".join(lines)

    def plot(self, path: str | Path | None = None, ax=None):
        """The paper's Figure 4: each tier's share of clicks on the top-N items. Saves a PNG if ``path``."""
        import matplotlib

        if path is not None and ax is None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        share = self.top_items.pivot(index="rank", columns="tier", values="share")[list(self.tier_names)]
        own = ax is None
        if own:
            fig, ax = plt.subplots(figsize=(8, 3.5))
        n, T = share.shape
        width = 0.8 / T
        x = np.arange(n)
        for k, name in enumerate(self.tier_names):
            ax.bar(x + (k - (T - 1) / 2) * width, share[name].to_numpy(), width, label=name)
        ax.set_xticks(x, [f"#{r + 1}" for r in share.index])
        ax.set_xlabel("item popularity rank")
        ax.set_ylabel("share of the tier's clicks")
        ax.set_title(f"{self.mapping}: mean JSD {self.mean_jsd:.3f}, Cramer's V {self.cramers_v:.3f}")
        ax.legend(title="tier")
        if own:
            fig.tight_layout()
            if path is not None:
                fig.savefig(path, dpi=120)
                plt.close(fig)
        return ax


def tier_item_counts(tiers: TierAssignment, user: np.ndarray, item: np.ndarray, label: np.ndarray, n_items: int) -> np.ndarray:
    """``[n_tiers, n_items]`` click counts."""
    clicked = np.asarray(label) == 1
    t = tiers.tier[np.asarray(user)[clicked]].astype(np.int64)
    return np.bincount(t * n_items + np.asarray(item)[clicked], minlength=tiers.n_tiers * n_items).reshape(tiers.n_tiers, n_items)


def heterogeneity_report(
    tiers: TierAssignment,
    user: np.ndarray,
    item: np.ndarray,
    label: np.ndarray,
    n_items: int,
    top_n: int = 10,
    min_item_clicks: int = 5,
    is_train: np.ndarray | None = None,
) -> HeterogeneityReport:
    """Clicks of all given events drive the heterogeneity measures; ``is_train`` (a mask over the
    same events) adds each tier's training data volume (:func:`tier_volume`)."""
    counts = tier_item_counts(tiers, user, item, label, n_items).astype(np.float64)
    names = tiers.names
    T = tiers.n_tiers
    clicks = counts.sum(axis=1)
    dist = np.divide(counts, clicks[:, None], out=np.zeros_like(counts), where=clicks[:, None] > 0)

    total = counts.sum(axis=0)
    top = np.lexsort((np.arange(n_items), -total))[:top_n]
    top_items = pd.DataFrame(
        [(int(i), r, names[t], float(dist[t, i])) for r, i in enumerate(top) for t in range(T)],
        columns=["item", "rank", "tier", "share"],
    )

    jsd = np.zeros((T, T))
    for a in range(T):
        for b in range(a + 1, T):
            if clicks[a] > 0 and clicks[b] > 0:
                jsd[a, b] = jsd[b, a] = jensenshannon(dist[a], dist[b], base=2) ** 2
            else:
                jsd[a, b] = jsd[b, a] = np.nan
    pairs = jsd[np.triu_indices(T, 1)]
    mean_jsd = float(np.nanmean(pairs)) if np.isfinite(pairs).any() else float("nan")

    n = counts.sum()
    mi = float("nan")
    if n > 0:
        joint = counts / n
        pt = joint.sum(axis=1, keepdims=True)
        pi = joint.sum(axis=0, keepdims=True)
        nz = joint > 0
        mi = float((joint[nz] * np.log2(joint[nz] / (pt @ pi)[nz])).sum())

    keep_items = total >= min_item_clicks
    table = counts[:, keep_items]
    table = table[table.sum(axis=1) > 0]
    if table.shape[0] >= 2 and table.shape[1] >= 2:
        res = chi2_contingency(table, correction=False)
        chi2, p, dof = float(res.statistic), float(res.pvalue), int(res.dof)
        cramers_v = float(np.sqrt(chi2 / (table.sum() * (min(table.shape) - 1))))
    else:
        chi2, p, dof, cramers_v = float("nan"), float("nan"), 0, float("nan")

    return HeterogeneityReport(
        mapping=tiers.spec,
        tier_names=names,
        users_per_tier=tiers.sizes(),
        clicks_per_tier=clicks.astype(np.int64),
        top_items=top_items,
        jsd=pd.DataFrame(jsd, index=list(names), columns=list(names)),
        mean_jsd=mean_jsd,
        mutual_information=mi,
        chi2=chi2,
        p_value=p,
        dof=dof,
        cramers_v=cramers_v,
        extra={"items_in_chi2": int(keep_items.sum()), "min_item_clicks": min_item_clicks},
        volume=None if is_train is None else tier_volume(tiers, user, label, is_train),
    )


def tier_volume(tiers: TierAssignment, user: np.ndarray, label: np.ndarray, is_train: np.ndarray) -> pd.DataFrame:
    """Per tier: training events and clicks, training events per user (mean, quartiles; every user
    of the tier counts, including those with no training event) and the share of all training events."""
    train = np.asarray(is_train, dtype=bool)
    u = np.asarray(user)[train]
    per_user = np.bincount(u, minlength=tiers.n_users)
    clicks_per_user = np.bincount(u, weights=(np.asarray(label)[train] == 1), minlength=tiers.n_users)
    total = per_user.sum()
    rows = []
    for t in range(tiers.n_tiers):
        mine = per_user[tiers.tier == t]
        q25, med, q75 = np.percentile(mine, [25, 50, 75]) if mine.size else (np.nan,) * 3
        rows.append({
            "train_events": int(mine.sum()),
            "train_clicks": int(clicks_per_user[tiers.tier == t].sum()),
            "train_events_per_user_mean": float(mine.mean()) if mine.size else np.nan,
            "train_events_per_user_q25": float(q25),
            "train_events_per_user_median": float(med),
            "train_events_per_user_q75": float(q75),
            "train_event_share": float(mine.sum() / total) if total else np.nan,
        })
    return pd.DataFrame(rows, index=list(tiers.names))


def report_for(dataset, tiers: TierAssignment, top_n: int = 10, min_item_clicks: int = 5) -> HeterogeneityReport:
    """:func:`heterogeneity_report` over all events of an :class:`~rf2.data.InteractionDataset`,
    with each tier's training data volume (validation events, on a leave-one-out dataset, are not
    training data)."""
    is_train = np.zeros(len(dataset.user), dtype=bool)
    is_train[dataset.train_index] = True
    return heterogeneity_report(tiers, dataset.user, dataset.item, dataset.label, dataset.n_items, top_n, min_item_clicks,
                                is_train=is_train)
