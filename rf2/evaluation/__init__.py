"""Evaluation: per-tier accuracy on each client's test events, and fairness (RF² §4.4).

* :mod:`.metrics` — exact AUC and log loss on the test events, relative change (Eq. 1), MDAC (Eq. 2);
* :mod:`.ranking` — NDCG@K and Recall@K over the full catalogue (HeteFedRec §V), same tidy format.
"""
from .metrics import OVERALL, TierMetrics, auc, log_loss, mdac, relative_change, tier_metrics
from .ranking import (
    iter_item_scores, ranking_at_k, ranking_by_user, ranking_frame, ranking_metrics, score_all_items, top_k_items,
)

__all__ = [
    "OVERALL", "TierMetrics", "auc", "iter_item_scores", "log_loss", "mdac", "ranking_at_k", "ranking_by_user",
    "ranking_frame", "ranking_metrics", "relative_change", "score_all_items", "tier_metrics", "top_k_items",
]
