"""The data of a round's clients, gathered once and shared by every engine."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rf2.data import FeatureEncoder, InteractionDataset


@dataclass
class RoundBatch:
    clients: np.ndarray  # [C] client (user) ids, in round order
    X: torch.Tensor  # [S, cols] all training samples of the clients, grouped by client in round order
    y: torch.Tensor  # [S] labels
    ptr: torch.Tensor  # [C + 1] client c's samples are X[ptr[c]:ptr[c+1]]

    @property
    def n_clients(self) -> int:
        return int(self.clients.size)

    def counts(self) -> torch.Tensor:
        return self.ptr[1:] - self.ptr[:-1]

    def segment(self) -> torch.Tensor:
        """``[S]`` client position of every sample."""
        return torch.repeat_interleave(torch.arange(self.n_clients), self.counts())

    def client(self, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = int(self.ptr[c]), int(self.ptr[c + 1])
        return self.X[a:b], self.y[a:b]

    @classmethod
    def gather(cls, dataset: InteractionDataset, encoder: FeatureEncoder, clients: np.ndarray) -> "RoundBatch":
        clients = np.asarray(clients, dtype=np.int64)
        starts, ends = dataset.train_ptr[clients], dataset.train_ptr[clients + 1]
        counts = ends - starts
        if (counts == 0).any():
            bad = clients[counts == 0][:5].tolist()
            raise ValueError(f"clients {bad} have no training events and cannot train")
        offsets = np.repeat(starts - np.r_[0, np.cumsum(counts)[:-1]], counts)
        idx = dataset.train_index[np.arange(counts.sum()) + offsets]
        return cls(
            clients=clients,
            X=encoder.encode(idx),
            y=encoder.labels(idx),
            ptr=torch.from_numpy(np.r_[0, np.cumsum(counts)].astype(np.int64)),
        )
