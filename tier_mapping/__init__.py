"""Tier mapping: which device tier each user (client) is on.

Specs (strings, as used in configs and on the command line):

==========================  =====================================================================
``random``                  equal-size random tiers (no system-induced data heterogeneity)
``dirichlet:ALPHA``         Algorithm 1 of RF² with concentration ``ALPHA`` (> 0, <= 1e9)
``dirichlet:ALPHA:unbalanced``  Algorithm 1 without lines 4-5 (tier sizes not balanced)
``hetero-vlow`` ...         the paper's names (§5.3): vlow = 5000, low = 5, mid = 0.5,
                            high = 0.05, vhigh = 0.005
``activity[:R1:R2:...]``    not RF²'s: tiers by number of training events, lightest users lowest,
                            in proportions R (default equal); HeteFedRec's grouping
==========================  =====================================================================
"""
from __future__ import annotations

import numbers
import re
from typing import TYPE_CHECKING

from .activity import activity_mapping, count_groups
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

#: Largest Dirichlet concentration accepted. Far beyond it the mapping is random in all but name
#: (the paper's "vlow" is 5000), and near float64's limit the gamma draws overflow and every
#: probability becomes 0, which would put every user in one tier.
MAX_ALPHA = 1e9
#: Tier indices are stored as int8.
MAX_TIERS = 127

_HELP = (
    f"use 'random', 'dirichlet:ALPHA' (ALPHA a decimal number in (0, {MAX_ALPHA:g}], e.g. dirichlet:0.05), "
    f"'dirichlet:ALPHA:unbalanced', 'activity' or 'activity:5:3:2' (tiers by training events, one ratio part "
    f"per tier), or one of {sorted(PAPER_LEVELS)}"
)
#: A plain ASCII decimal number (no ``1_0``, no non-ASCII digits, no ``inf``/``nan``).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_mapping(spec: str) -> tuple[str, float | tuple[float, ...] | None, bool]:
    """``spec`` -> ``(kind, parameter, balance)``: ``alpha`` for ``dirichlet``, the ratio (or
    ``None``: equal parts) for ``activity``. Raises ``ValueError`` naming the spec and the allowed forms."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"tier mapping must be a non-empty string, got {spec!r}; {_HELP}")
    s = spec.strip().lower()
    if s in PAPER_LEVELS:
        return "dirichlet", PAPER_LEVELS[s], True
    if s == "random":
        return "random", None, True
    parts = [p.strip() for p in s.split(":")]
    if parts[0] == "activity":
        if len(parts) == 1:
            return "activity", None, True
        if any(not _NUMBER.fullmatch(p) for p in parts[1:]):
            raise ValueError(f"tier mapping {spec!r}: ratio parts must be decimal numbers; {_HELP}")
        ratio = tuple(float(p) for p in parts[1:])
        if not all(0 < r <= MAX_ALPHA for r in ratio):
            raise ValueError(f"tier mapping {spec!r}: ratio parts must be > 0 and <= {MAX_ALPHA:g}; {_HELP}")
        return "activity", ratio, True
    if parts[0] == "dirichlet" and len(parts) in (2, 3):
        if not _NUMBER.fullmatch(parts[1]):
            raise ValueError(f"tier mapping {spec!r}: alpha {parts[1]!r} is not a decimal number; {_HELP}")
        alpha = float(parts[1])
        if not 0 < alpha <= MAX_ALPHA:
            raise ValueError(
                f"tier mapping {spec!r}: Dirichlet alpha must be > 0 and <= {MAX_ALPHA:g}, got {parts[1]}; {_HELP}"
            )
        if len(parts) == 3 and parts[2] not in ("unbalanced", "balanced"):
            raise ValueError(f"tier mapping {spec!r}: the third part must be 'unbalanced' or 'balanced', got {parts[2]!r}; {_HELP}")
        return "dirichlet", alpha, not (len(parts) == 3 and parts[2] == "unbalanced")
    raise ValueError(f"unknown tier mapping {spec!r}; {_HELP}")


def check_n_tiers(n_tiers) -> int:
    """``n_tiers`` if it is an integer in ``[2, MAX_TIERS]``, else ``ValueError``."""
    if not isinstance(n_tiers, numbers.Integral) or isinstance(n_tiers, bool) or not 2 <= n_tiers <= MAX_TIERS:
        raise ValueError(f"n_tiers must be an integer in [2, {MAX_TIERS}] (RF²: 3, low/mid/high), got {n_tiers!r}")
    return int(n_tiers)


def map_tiers(dataset: "InteractionDataset", spec: str, n_tiers: int = 3, seed: int = 0) -> TierAssignment:
    """Assign every user of ``dataset`` a tier. Clicks of all events (train and test) drive the
    Dirichlet mapping: the tier is a property of the device, not of the training split."""
    kind, alpha, balance = parse_mapping(spec)
    n_tiers = check_n_tiers(n_tiers)
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"tier mapping seed must be an integer >= 0, got {seed!r}")
    if kind == "random":
        return random_mapping(dataset.n_users, n_tiers, seed, spec=spec)
    if kind == "activity":
        return activity_mapping(dataset.train_counts, n_tiers, alpha, spec=spec, seed=seed)
    return dirichlet_mapping(
        dataset.user, dataset.item, dataset.label, dataset.n_users, dataset.n_items,
        alpha=alpha, n_tiers=n_tiers, balance=balance, seed=seed, spec=spec,
    )


__all__ = [
    "MAX_ALPHA", "MAX_TIERS", "PAPER_LEVELS", "PAPER_MAPPINGS", "TierAssignment", "activity_mapping", "assign_tiers",
    "count_groups", "check_n_tiers", "dirichlet_mapping", "first_items",
    "map_tiers", "parse_mapping", "random_mapping", "tier_names",
]
