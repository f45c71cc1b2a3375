"""Step 1 of a round: which clients participate.

RF² §4.1: the server picks ``K`` clients per round *without repetition* until every client has
been picked exactly once (an epoch), then starts over with a fresh order. The last round of an
epoch holds the remaining ``n mod K`` clients when ``K`` does not divide ``n``.
"""
from __future__ import annotations

import numpy as np

from rf2.seeding import numpy_rng


class NoRepeatSelector:
    def __init__(self, clients: np.ndarray, per_round: int, seed: int):
        clients = np.asarray(clients, dtype=np.int64)
        if clients.size == 0:
            raise ValueError("client selection: there are no clients with training data")
        if not 1 <= per_round <= clients.size:
            raise ValueError(
                f"clients_per_round={per_round} but only {clients.size} clients have training data; "
                f"choose clients_per_round between 1 and {clients.size}"
            )
        self.clients = clients
        self.per_round = per_round
        self.seed = seed

    def rounds_per_epoch(self) -> int:
        return -(-self.clients.size // self.per_round)

    def epoch(self, epoch: int) -> list[np.ndarray]:
        """The rounds of one epoch: disjoint client sets whose union is every client."""
        order = numpy_rng(self.seed, "selection", epoch).permutation(self.clients)
        return [order[i : i + self.per_round] for i in range(0, order.size, self.per_round)]
