"""Tier mapping: which device tier each user (client) is on.

Specs (strings, as used in configs and on the command line):

==========================  =====================================================================
``random``                  equal-size random tiers (no system-induced data heterogeneity)
``dirichlet:ALPHA``         Algorithm 1 of RF² with concentration ``ALPHA`` (> 0)
``dirichlet:ALPHA:unbalanced``  Algorithm 1 without lines 4-5 (tier sizes not balanced)
``hetero-vlow`` ...         the paper's names (§5.3): vlow = 5000, low = 5, mid = 0.5,
                            high = 0.05, vhigh = 0.005
==========================  =====================================================================
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import TierAssignment, tier_names
from .dirichlet import assign_tiers, dirichlet_mapping, first_items
from .random import random_mapping

if TYPE_CHECKING:
    from rf2.data import InteractionDataset

#: RF² §5.3 names for the Dirichlet concentrations.
PAPER_LEVELS = {
    "hetero-vlow": 5000.0,
    "hetero-low": 5.0,
    "hetero-mid": 0.5,
    "hetero-high": 0.05,
    "hetero-vhigh": 0.005,
}
#: The six mappings of the paper's evaluation, least to most heterogeneous.
PAPER_MAPPINGS = ("random", "dirichlet:5000", "dirichlet:5", "dirichlet:0.5", "dirichlet:0.05", "dirichlet:0.005")

_HELP = (
    "use 'random', 'dirichlet:ALPHA' (ALPHA > 0, e.g. dirichlet:0.05), 'dirichlet:ALPHA:unbalanced', "
    f"or one of {sorted(PAPER_LEVELS)}"
)


def parse_mapping(spec: str) -> tuple[str, float | None, bool]:
    """``spec`` -> ``(kind, alpha, balance)``; raises ``ValueError`` naming the fix."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"tier mapping must be a non-empty string; {_HELP}")
    s = spec.strip().lower()
    if s in PAPER_LEVELS:
        return "dirichlet", PAPER_LEVELS[s], True
    if s == "random":
        return "random", None, True
    parts = s.split(":")
    if parts[0] == "dirichlet" and len(parts) in (2, 3):
        try:
            alpha = float(parts[1])
        except ValueError:
            raise ValueError(f"tier mapping {spec!r}: alpha {parts[1]!r} is not a number; {_HELP}") from None
        if not alpha > 0 or alpha == float("inf"):
            raise ValueError(f"tier mapping {spec!r}: Dirichlet alpha must be > 0 and finite, got {alpha:g}; {_HELP}")
        if len(parts) == 3 and parts[2] not in ("unbalanced", "balanced"):
            raise ValueError(f"tier mapping {spec!r}: the third part must be 'unbalanced' or 'balanced'; {_HELP}")
        return "dirichlet", alpha, not (len(parts) == 3 and parts[2] == "unbalanced")
    raise ValueError(f"unknown tier mapping {spec!r}; {_HELP}")


def map_tiers(dataset: "InteractionDataset", spec: str, n_tiers: int = 3, seed: int = 0) -> TierAssignment:
    """Assign every user of ``dataset`` a tier. Clicks of all events (train and test) drive the
    Dirichlet mapping: the tier is a property of the device, not of the training split."""
    kind, alpha, balance = parse_mapping(spec)
    if kind == "random":
        return random_mapping(dataset.n_users, n_tiers, seed, spec=spec)
    return dirichlet_mapping(
        dataset.user, dataset.item, dataset.label, dataset.n_users, dataset.n_items,
        alpha=alpha, n_tiers=n_tiers, balance=balance, seed=seed, spec=spec,
    )


__all__ = [
    "PAPER_LEVELS", "PAPER_MAPPINGS", "TierAssignment", "assign_tiers", "dirichlet_mapping", "first_items",
    "map_tiers", "parse_mapping", "random_mapping", "tier_names",
]
