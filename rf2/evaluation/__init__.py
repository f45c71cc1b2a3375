"""Evaluation: per-tier accuracy on each client's test events, and fairness (RF² §4.4)."""
from .metrics import OVERALL, TierMetrics, auc, log_loss, mdac, relative_change, tier_metrics

__all__ = ["OVERALL", "TierMetrics", "auc", "log_loss", "mdac", "relative_change", "tier_metrics"]
