"""Standalone: no collaboration at all (HeteFedRec §V-A's lower baseline).

Every client trains its own copy of the model, starting from the common initial one, on its own
data only, for as many rounds as federated training would select it (``epochs``, each of
``local_steps`` steps); nothing is uploaded or aggregated, and every client is evaluated with its
own model. The training itself is :mod:`rf2.standalone`. With HeteFedRec's sizes, use
``hetefedrec:8,16,32:standalone=on`` instead (each client trains the model of its size).
"""
from __future__ import annotations

from .base import Optimization


class Standalone(Optimization):
    name = "standalone"
    collaborative = False

    def describe(self, tier_names=("low", "mid", "high")) -> str:
        return "no collaboration: each client trains its own model"
