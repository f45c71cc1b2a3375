"""What a run keeps so that its metrics can be recomputed (and resampled): the test events'
user, tier, label and score, and each ranked user's ranking metrics.

A run's :class:`EvalScores` is stored beside its tidy rows as ``runs/<id>.scores.npz`` (numpy's
compressed archive: one column per array), about 10 bytes per test event before compression.
:mod:`rf2.evaluation.uncertainty` bootstraps intervals from it.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

#: Per-event arrays and their stored dtypes.
EVENT_COLUMNS = {"user": np.int32, "tier": np.int8, "label": np.int8, "score": np.float32}


@dataclass
class EvalScores:
    """Test events (``user``, ``tier``, ``label``, ``score`` = the model's logit) in the order of
    the dataset's ``test_index``, the tier names, and optionally per-user ranking metrics
    (``ranking_user`` and ``ranking[metric]``, one value per evaluated user)."""

    user: np.ndarray
    tier: np.ndarray
    label: np.ndarray
    score: np.ndarray
    tier_names: tuple[str, ...]
    user_tier: np.ndarray  # tier of every user of the dataset (index = user id)
    ranking_user: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    ranking: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.user)
        for k in ("tier", "label", "score"):
            if len(getattr(self, k)) != n:
                raise ValueError(f"EvalScores: {k} has {len(getattr(self, k))} entries, user has {n}")
        for k, v in self.ranking.items():
            if len(v) != len(self.ranking_user):
                raise ValueError(f"EvalScores: ranking metric {k} has {len(v)} values for {len(self.ranking_user)} users")

    @classmethod
    def from_run(cls, users, tiers, labels, logits, tier_names, user_tier, per_user=None) -> "EvalScores":
        """``per_user``: the frame of :func:`rf2.evaluation.ranking.ranking_by_user` (index user)."""
        rank_user = np.zeros(0, dtype=np.int32)
        ranking: dict[str, np.ndarray] = {}
        if per_user is not None and len(per_user):
            rank_user = per_user.index.to_numpy().astype(np.int32)
            ranking = {c: per_user[c].to_numpy(dtype=np.float32) for c in per_user.columns if "@" in c}
        return cls(np.asarray(users, dtype=np.int32), np.asarray(tiers, dtype=np.int8), np.asarray(labels, dtype=np.int8),
                   np.asarray(logits, dtype=np.float32), tuple(tier_names), np.asarray(user_tier, dtype=np.int8),
                   rank_user, ranking)

    def to_bytes(self) -> bytes:
        arrays = {k: np.asarray(getattr(self, k), dtype=t) for k, t in EVENT_COLUMNS.items()}
        arrays["tier_names"] = np.array(self.tier_names)
        arrays["user_tier"] = np.asarray(self.user_tier, dtype=np.int8)
        arrays["ranking_user"] = np.asarray(self.ranking_user, dtype=np.int32)
        for k, v in self.ranking.items():
            arrays[f"ranking:{k}"] = np.asarray(v, dtype=np.float32)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "EvalScores":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            ranking = {k.split(":", 1)[1]: z[k] for k in z.files if k.startswith("ranking:")}
            return cls(z["user"], z["tier"], z["label"], z["score"], tuple(str(t) for t in z["tier_names"]),
                       z["user_tier"], z["ranking_user"], ranking)

    @property
    def metrics(self) -> list[str]:
        return ["auc", "log_loss", *self.ranking]
