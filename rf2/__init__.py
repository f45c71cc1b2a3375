"""rf2: a benchmarking simulator for fair federated recommendation.

A federated round, in the order the packages of ``rf2`` run it::

    data/ -> selection/ -> clients/ -> optimizations/ (upload channel) -> aggregation/ -> servers/
                                                                   evaluation/ (per-tier metrics, MDAC)

``tier_mapping/`` assigns each user a device tier before training; ``optimizations/`` holds the
tier-aware optimisations that hook into every step of the round.
"""
__version__ = "0.2.0"  # 0.2: the RF² authors' defaults, results format 3, intervals (rf2/upgrade.py)
