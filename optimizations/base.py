"""The tier-aware optimisation interface: hooks into every step of a federated round.

An optimisation overrides only the hooks it changes; every hook defaults to "do nothing", so
``Optimization()`` itself is plain FedAvg (the ``none`` baseline). In round order:

=========================  ==========================================================================
``setup(...)``             once before training: see the model, dataset and tiers (HeteFedRec groups)
``eligible(tiers)``        which clients may ever be selected (Exclude Lo)
``selection_size(k)``      how many candidates the server draws per round (Overselect draws more)
``participants(...)``      which candidates train and report (Overselect drops some)
``client_masks(...)``      the sub-model each client trains (Channel: fewer hidden units)
``client_loss_args(...)``  per-client arguments of the model's own ``client_loss`` (HeteFedRec)
``compute_fraction(...)``  the share of the full model's work that sub-model costs (system model)
``encode(updates)``        what a client does to its update before upload (Prune, Quant)
``upload_bits(updates)``   the size of each client's upload, for the system model
``decode(updates)``        what the server does on reception (dequantise)
``aggregate(updates)``     combine the updates (default: FedAvg, masked entries averaged over holders)
``after_step(...)``        anything after the server optimiser step
=========================  ==========================================================================

An optimisation with ``collaborative = False`` (Standalone) has no server: every client trains
its own model from the common initial one and is scored with it (:mod:`rf2.standalone`); the
selection, upload and server hooks are then not called.

An optimisation with ``personalised = True`` (FedEM, :mod:`optimizations.fedem`) has no global
model either: every client keeps its whole model across rounds and the server sends each
aggregated client its own table. Its round (:mod:`rf2.personalised`) keeps the same five steps —
select, download (merge the client's personalised table), train locally
(:mod:`rf2.clients.fedem`), upload (a sampled share of the tables), aggregate per client
(:mod:`rf2.aggregation.personalised`) — with the optimisation's settings in place of these hooks.

Hooks receive the round's clients together (vectorised), each with a frozen
:class:`ClientContext` (id, tier, round, sample count, and its own RNG seed derived from the run
seed, the round and the client id), so tier-aware behaviour is expressible and reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from rf2.aggregation import GlobalUpdate, fedavg
from rf2.clients.updates import ClientUpdates
from rf2.seeding import int_seed, numpy_rng, torch_generator

if TYPE_CHECKING:
    from rf2.models import RecModel


@dataclass(frozen=True)
class ClientContext:
    client_id: int
    tier: int  # 0 = lowest-end device tier
    tier_name: str
    round: int  # global round index (0-based, across epochs)
    epoch: int
    num_samples: int  # training samples on the client
    seed: int  # this client's seed for this round

    def rng(self, purpose: str = "client") -> np.random.Generator:
        """This client's numpy stream for ``purpose`` (distinct purposes never share draws)."""
        return numpy_rng(self.seed, purpose)

    def torch_generator(self, purpose: str = "client") -> torch.Generator:
        return torch_generator(self.seed, purpose)


def make_contexts(run_seed: int, clients: np.ndarray, tiers: np.ndarray, names: Sequence[str],
                  round_: int, epoch: int, num_samples: np.ndarray) -> list[ClientContext]:
    return [
        ClientContext(int(c), int(tiers[c]), names[int(tiers[c])], round_, epoch, int(n),
                      int_seed(run_seed, "client", round_, int(c)))
        for c, n in zip(clients, num_samples)
    ]


class Optimization:
    """No-op base: plain FedAvg. Subclasses override hooks and set ``name``/``spec``."""

    name = "none"
    #: False: clients never share anything (Standalone; :mod:`rf2.standalone`)
    collaborative = True
    #: True: clients keep whole personal models, no global model (FedEM; :mod:`rf2.personalised`)
    personalised = False

    def __init__(self, spec: str | None = None):
        self.spec = spec or self.name

    def describe(self, tier_names: Sequence[str] = ("low", "mid", "high")) -> str:
        """What the spec means in words, for figure legends and reports (``quant:1:2:8`` ->
        ``"low/mid/high: 4/8/32 bits"``); ``tier_names`` low to high."""
        return "plain FedAvg (the baseline)" if self.name == "none" else self.spec

    def validate(self, tier_names: Sequence[str]) -> None:
        """Called once before training: raise ``ValueError`` if the run's tiers do not fit."""
        return None

    def setup(self, model: "RecModel", dataset, tiers, seed: int) -> None:
        """Called once by the simulation before training, with the built model, the dataset, the
        :class:`~tier_mapping.TierAssignment` and the run seed (e.g. to group users by data size)."""
        return None

    # -- selection -------------------------------------------------------------------------------
    def eligible(self, tiers: np.ndarray) -> np.ndarray:
        """Boolean mask over clients: who may ever be selected."""
        return np.ones(tiers.shape, dtype=bool)

    def selection_size(self, k: int) -> int:
        return k

    def participants(self, contexts: list[ClientContext], round_time=None) -> list[ClientContext]:
        """``round_time(contexts)`` gives each candidate's simulated time to train and upload the
        full model (seconds), from the system model."""
        return contexts

    # -- local training --------------------------------------------------------------------------
    def client_masks(self, contexts: list[ClientContext], model: "RecModel") -> dict[str, torch.Tensor] | None:
        """``[C, *shape]`` boolean masks of the parameter entries each client holds; ``None``: all."""
        return None

    def client_loss_args(self, contexts: list[ClientContext], model: "RecModel") -> dict[str, torch.Tensor] | None:
        """``[C, ...]`` per-client keyword arguments of the model's ``client_loss(params, X, y,
        weights, **args)`` (:func:`rf2.clients.reference.client_loss`); ``None``: plain BCE."""
        return None

    def compute_fraction(self, contexts: list[ClientContext], model: "RecModel") -> np.ndarray:
        """Per client, the work of its local training relative to the full model (system model)."""
        return np.ones(len(contexts))

    # -- upload channel --------------------------------------------------------------------------
    def encode(self, updates: ClientUpdates) -> ClientUpdates:
        return updates

    def upload_bits(self, updates: ClientUpdates) -> torch.Tensor:
        """``[C]`` bits each client uploads: by default every held entry as a 32-bit float."""
        return dense_entry_count(updates) * 32.0

    def decode(self, updates: ClientUpdates) -> ClientUpdates:
        return updates

    # -- engine shortcut --------------------------------------------------------------------------
    def is_linear(self) -> bool:
        """Whether the round's aggregate is FedAvg of the raw client updates (``encode``, ``decode``
        and ``aggregate`` are the base ones). With one local step the batched engine then computes
        the aggregate directly, as one gradient pass per sub-model over the pooled samples, which
        equals the per-client computation exactly (``tests/test_engine_equivalence.py``)."""
        cls = type(self)
        return (cls.encode is Optimization.encode and cls.decode is Optimization.decode
                and cls.aggregate is Optimization.aggregate)

    # -- server ----------------------------------------------------------------------------------
    def aggregate(self, updates: ClientUpdates) -> GlobalUpdate:
        return fedavg(updates)

    def after_step(self, params: dict[str, torch.Tensor], round_: int) -> None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


def dense_entry_count(updates: ClientUpdates) -> torch.Tensor:
    """``[C]`` number of entries in each client's full update (all tables, all rows), counting only
    entries the client holds."""
    return updates.entry_counts()
