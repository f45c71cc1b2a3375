"""The data of a round's clients, gathered once and shared by every engine."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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
    def gather(cls, dataset: InteractionDataset, encoder: FeatureEncoder, clients: np.ndarray, negatives: int = 0,
               seeds: Sequence[int] | None = None, exclude_eval_negatives: bool = False,
               pool: str = "unrated") -> "RoundBatch":
        """The training samples of ``clients`` (user ids, in round order), grouped per client.

        ``negatives=0`` (the default): each client's training events, labels as in the dataset.

        ``negatives=k > 0`` (implicit feedback, e.g. ``split="leave-one-out"``; FedEM §2.7): each
        client's samples are its training positives (label 1, every training event must be one),
        followed by ``k`` negatives per positive (label 0), drawn by
        :func:`rf2.clients.negatives.sample_training_negatives` from ``seeds`` (one per client, its
        seed for this round: ``ClientContext.seed``); negative ``j`` of the client's ``p``-th
        positive is its sample ``n + p * k + j`` (``n`` positives). So a client has ``(1 + k) * n``
        samples (FedEM: ``m_u = 5 (|I_u| - 2)``). Negative rows: see
        :func:`rf2.clients.negatives.encode_negatives`.
        """
        from .negatives import _check_k, encode_negatives, sample_training_negatives

        k = _check_k(negatives)
        clients = np.asarray(clients, dtype=np.int64)
        starts, ends = dataset.train_ptr[clients], dataset.train_ptr[clients + 1]
        counts = ends - starts
        if (counts == 0).any():
            bad = clients[counts == 0][:5].tolist()
            raise ValueError(f"clients {bad} have no training events and cannot train")
        offsets = np.repeat(starts - np.r_[0, np.cumsum(counts)[:-1]], counts)
        idx = dataset.train_index[np.arange(counts.sum()) + offsets]
        if k == 0:
            return cls(
                clients=clients,
                X=encoder.encode(idx),
                y=encoder.labels(idx),
                ptr=torch.as_tensor(np.r_[0, np.cumsum(counts)].astype(np.int64)),
            )
        if seeds is None:
            raise ValueError(f"negatives={k} needs seeds: one integer per client (its seed for this round, "
                             "ClientContext.seed), so that the negatives are re-drawn reproducibly every round")
        label = dataset.label[idx]
        if (label != 1).any():
            u = int(dataset.user[idx[label != 1][0]])
            raise ValueError(f"negatives={k}: sampled training negatives are for implicit feedback, where every "
                             f"training event is a positive (e.g. split='leave-one-out'); user {u} has a training "
                             "event with label 0")
        neg = sample_training_negatives(dataset, clients, seeds, k, exclude_eval_negatives, pool)
        X_pos = encoder.encode_numpy(idx)
        X_neg = encode_negatives(encoder, X_pos, neg)
        # per client: its n positives, then its n * k negatives
        P = idx.size
        pos_ptr = np.r_[0, np.cumsum(counts)].astype(np.int64)
        out_ptr = pos_ptr * (1 + k)
        pos_dest = np.arange(P, dtype=np.int64) + np.repeat(out_ptr[:-1] - pos_ptr[:-1], counts)
        neg_dest = np.arange(P * k, dtype=np.int64) + np.repeat(out_ptr[:-1] + counts - pos_ptr[:-1] * k, counts * k)
        X = np.empty((P * (1 + k), X_pos.shape[1]), dtype=np.float32)
        X[pos_dest], X[neg_dest] = X_pos, X_neg
        y = np.zeros(P * (1 + k), dtype=np.float32)
        y[pos_dest] = 1.0
        return cls(clients=clients, X=torch.as_tensor(X), y=torch.as_tensor(y), ptr=torch.as_tensor(out_ptr))
