"""A federated training run, round by round (RF² §4.1, Figure 3).

Before training: load the dataset, map users to tiers (:mod:`tier_mapping`), build the model.
Every round:

1. **select** ``K`` clients without repetition (:mod:`rf2.selection`) among those the
   optimisation allows (``eligible``), then let it pick the ``participants``;
2. **broadcast** the global model and **train locally** on each client's data (with
   ``train_negatives``, plus negatives re-drawn this round): ``local_epochs`` of ``local_steps``
   steps per batch (full batch by default, RF²; mini-batches of ``local_batch_size``, shuffled per
   epoch, with an optional early stop or a validation hold-out, ``local_valid_fraction``, that picks
   the epoch returned, HeteFedRec §V-A; :mod:`rf2.clients.local`) of SGD or Adam
   (:mod:`rf2.clients.optim`), possibly on a sub-model (``client_masks``);
3. **upload** through the optimisation's channel (``encode`` on the client, ``decode`` on the
   server);
4. **aggregate** (FedAvg by sample count, :mod:`rf2.aggregation`);
5. **server step**: the average as a pseudo-gradient for AdaGrad (:mod:`rf2.servers`).

After training: per-tier AUC on every client's test events (:mod:`rf2.evaluation`). On a
leave-one-out dataset, ``sampled_k`` adds HR/NDCG over sampled candidates
(:mod:`rf2.evaluation.sampled`); ``valid_every`` scores the validation items every N rounds (a
curve in the rounds table) and ``select_by = "valid"`` evaluates the round with the best
validation HR on test instead of the last (reported as the ``selected_round`` row).

An optimisation that is not ``collaborative`` (Standalone) runs :mod:`rf2.standalone` instead; a
``personalised`` one (FedEM: clients keep whole models, the server sends each its own table) runs
the same five steps in :mod:`rf2.personalised`.
"""
from __future__ import annotations

import functools
import math
import resource
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from optimizations import Optimization, make_contexts, parse_optimization
from tier_mapping import TierAssignment, map_tiers

from rf2.clients.batch import RoundBatch
from rf2.clients.batched import BatchedEngine
from rf2.clients.reference import ReferenceEngine
from rf2.config import RunConfig
from rf2.data import FeatureEncoder, InteractionDataset
from rf2.data.cache import load as load_cached
from rf2.device import device_scope, resolve_device, to_numpy
from rf2.evaluation import OVERALL, TierMetrics, tier_metrics
from rf2.evaluation.scores import EvalScores
from rf2.models import RecModel, build_model
from rf2.seeding import int_seed
from rf2.selection import NoRepeatSelector
from rf2.servers import make_server_optimizer
from rf2.system import SystemModel


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or parameter."""


def make_engine(name: str):
    return {"batched": BatchedEngine, "reference": ReferenceEngine}[name]()


@dataclass
class RunResult:
    config: RunConfig
    metrics: TierMetrics
    rounds: pd.DataFrame  # one row per round
    tiers: TierAssignment
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = float("nan")
    scores: EvalScores | None = None  # test events' scores and per-user ranking metrics (for intervals)

    def table(self) -> pd.DataFrame:
        return self.metrics.table()

    def rows(self) -> pd.DataFrame:
        """Tidy rows (tier, metric, value, sizes) each carrying the full config as columns."""
        f = self.metrics.frame.copy()
        for k, v in self.config.to_dict().items():
            f[k] = v if not isinstance(v, dict) else str(v)
        return f


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Schedule(Sequence):
    """The rounds of a run, ``(epoch, clients)``, built lazily: an epoch's rounds are drawn when
    first read, and the length is arithmetic (``epochs`` x rounds per epoch, capped at
    ``max_rounds``), so a large ``epochs`` with a small ``max_rounds`` costs nothing."""

    def __init__(self, selector: NoRepeatSelector, epochs: int, max_rounds: int = 0):
        self.selector, self.epochs = selector, epochs
        self.per_epoch = selector.rounds_per_epoch()
        total = epochs * self.per_epoch
        self.n = min(total, max_rounds) if max_rounds else total
        self._cached: tuple[int, list[np.ndarray]] | None = None

    def _epoch(self, e: int) -> list[np.ndarray]:
        if self._cached is None or self._cached[0] != e:
            self._cached = (e, self.selector.epoch(e))
        return self._cached[1]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"round {i} is outside the schedule's {self.n} rounds")
        e = i // self.per_epoch
        return e, self._epoch(e)[i % self.per_epoch]

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        return (self[i] for i in range(self.n))


def available_memory_bytes() -> int | None:
    """Memory the kernel can give without swapping (``MemAvailable``), or ``None`` if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def on_device(method):
    """Run a :class:`Simulation` method on the run's device: every tensor created there without a
    device is created on it (:func:`rf2.device.device_scope`)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with device_scope(self.device):
            return method(self, *args, **kwargs)

    return wrapper


class Simulation:
    def __init__(
        self,
        config: RunConfig,
        dataset: InteractionDataset | None = None,
        tiers: TierAssignment | None = None,
        progress: bool = True,
    ):
        self.config = config
        self.device = resolve_device(config.device)
        with device_scope(self.device):
            self._setup(config, dataset, tiers, progress)

    def _setup(self, config: RunConfig, dataset, tiers, progress: bool) -> None:
        t0 = time.perf_counter()
        self.dataset = dataset if dataset is not None else load_cached(config.dataset, config.dataset_options)
        self.tiers = tiers if tiers is not None else map_tiers(self.dataset, config.mapping, config.n_tiers, seed=config.seed)
        if self.tiers.n_users != self.dataset.n_users:
            raise ValueError(f"tier assignment covers {self.tiers.n_users} users, the dataset has {self.dataset.n_users}")
        if self.tiers.n_tiers != config.n_tiers:
            raise ValueError(f"tier assignment {self.tiers.spec!r} has {self.tiers.n_tiers} tiers {list(self.tiers.names)}, "
                             f"but the config has n_tiers={config.n_tiers}; make them agree")
        self.encoder = FeatureEncoder(self.dataset)
        # training randomness (model init, selection, clients): the run's seed, or for a noise-floor
        # replicate another stream with the same tiers (rf2.evaluation.uncertainty)
        self.train_seed = config.seed if config.replicate == 0 else int_seed(config.seed, "replicate", config.replicate)
        with torch.device("cpu"):  # built from the seeded CPU RNG, then moved: the same weights on every device
            model = build_model(config.model, self.dataset.schema, seed=int_seed(self.train_seed, "model"),
                                **config.model_options)
        self.model: RecModel = model.to(self.device)
        if hasattr(self.model, "bind_dataset"):  # models that score with each user's training data (lightgcn's local graphs)
            self.model.bind_dataset(self.dataset)
        # The global model θ: the model's own parameter storage, updated in place by the server.
        self.params = {k: p.detach() for k, p in self.model.named_parameters()}
        self.optimization: Optimization = parse_optimization(config.optimization)
        self.optimization.validate(self.tiers.names)
        self.optimization.setup(self.model, self.dataset, self.tiers, self.train_seed)
        self.server = make_server_optimizer(config.server_optimizer, config.server_lr)
        self.engine = make_engine(config.engine)
        self.system = SystemModel(self.tiers.names, config.system_options)
        # client-private parameters (RecModel.private_parameters): kept by their clients, never uploaded
        self.private = set(self.model.private_parameters())
        unknown = sorted(self.private - set(self.params))
        if unknown:
            raise ValueError(f"model {config.model!r} declares private parameters {unknown} it does not have")
        self.private_tables = self.private & set(self.model.embedding_tables())
        self.private_dense = self.private - self.private_tables
        self.private_store: dict[str, dict[int, torch.Tensor]] = {k: {} for k in sorted(self.private_dense)}
        if config.ranking_k and self.private_dense:
            raise ValueError("ranking_k: full-ranking evaluation supports private embedding tables only, not private "
                             f"dense parameters {sorted(self.private_dense)}; set ranking_k = 0")
        if config.sampled_k:
            if self.dataset.eval_negatives is None:
                raise ValueError(f"sampled_k: dataset {config.dataset!r} has no evaluation negatives; sampled HR/NDCG "
                                 "needs a leave-one-out dataset (dataset option split = 'leave-one-out')")
            if self.private_dense:
                raise ValueError("sampled_k: sampled evaluation supports private embedding tables only, not private "
                                 f"dense parameters {sorted(self.private_dense)}; set sampled_k = 0")
        positives_only = bool((self.dataset.label[self.dataset.train_index] == 1).all())
        if config.train_negatives and not positives_only:
            raise ValueError(f"train_negatives={config.train_negatives}: dataset {config.dataset!r} has its own training "
                             "negatives (labels 0/1); per-round training negatives need a positives-only dataset "
                             "(dataset option split = 'leave-one-out', or ml-1m-implicit's negatives = 0); set "
                             "train_negatives = 0 or load the dataset without negatives")
        if not config.train_negatives and positives_only:
            warnings.warn(f"dataset {config.dataset!r} has no training negatives: every training label is 1, so the "
                          "model can only learn that everything is a click; set train_negatives (FedEM, HeteFedRec: "
                          "4 per positive, re-drawn every round)", stacklevel=2)
        self.full_bits = 32.0 * sum(p.numel() for k, p in self.params.items() if k not in self.private)
        T = self.tiers.n_tiers
        self.cost = {"upload_bits": np.zeros(T), "compute_s": np.zeros(T), "participations": np.zeros(T, dtype=np.int64),
                     "dropped": np.zeros(T, dtype=np.int64)}
        self.progress = progress
        self.eval_scores: EvalScores | None = None
        self.load_seconds = time.perf_counter() - t0

    # -- training --------------------------------------------------------------------------------
    def training_clients(self) -> np.ndarray:
        has_data = self.dataset.train_counts > 0
        eligible = self.optimization.eligible(self.tiers.tier) & has_data
        clients = np.flatnonzero(eligible)
        if clients.size == 0:
            raise ValueError(
                f"optimization {self.optimization.spec!r} leaves no client to train under mapping "
                f"{self.tiers.spec!r} (tier sizes {dict(zip(self.tiers.names, self.tiers.sizes().tolist()))})"
            )
        return clients

    def schedule(self) -> "Schedule":
        """The run's rounds, ``(epoch, chosen clients)`` each (checked now, built as they are read)."""
        cfg = self.config
        pool = self.training_clients()
        size = self.optimization.selection_size(cfg.clients_per_round)
        if size > pool.size:
            k_max = max((k for k in range(1, pool.size + 1) if self.optimization.selection_size(k) <= pool.size), default=0)
            raise ValueError(f"clients_per_round={cfg.clients_per_round} with optimization {self.optimization.spec!r} needs "
                             f"{size} candidates per round, but only {pool.size} clients can train (with training data and "
                             f"eligible under {self.optimization.spec!r}); choose clients_per_round between 1 and {k_max}")
        return Schedule(NoRepeatSelector(pool, size, self.train_seed), cfg.epochs, cfg.max_rounds)

    def memory_estimate_bytes(self) -> int:
        """A lower bound of what a round needs (predictable before training): the global model
        and its server state, and per selected client a copy of every dense (non-embedding)
        parameter for its gradient, its update and the uploaded (encoded/decoded) update."""
        tables = set(self.model.embedding_tables())
        total = sum(p.numel() for p in self.params.values())
        dense = sum(p.numel() for k, p in self.params.items() if k not in tables)
        k = self.optimization.selection_size(self.config.clients_per_round)
        return 4 * (3 * total + 3 * k * dense)

    def check_memory(self) -> None:
        """Refuse, before training, a run whose rounds cannot fit in the memory available now."""
        need, have = self.memory_estimate_bytes(), available_memory_bytes()
        if have is not None and need > have:
            raise ValueError(f"this run needs at least {need / 1e6:,.0f} MB per round (model {self.config.model!r}, "
                             f"clients_per_round={self.config.clients_per_round}: one copy of the dense parameters "
                             f"per client), but only {have / 1e6:,.0f} MB are available; lower clients_per_round or "
                             "the model's size")

    @on_device
    def train_round(self, round_: int, epoch: int, chosen: np.ndarray) -> dict:
        cfg, ds, opt = self.config, self.dataset, self.optimization
        candidates = make_contexts(self.train_seed, chosen, self.tiers.tier, self.tiers.names, round_, epoch,
                                   ds.train_counts[chosen] * (1 + cfg.train_negatives))
        contexts = opt.participants(candidates, self.full_round_time)
        clients = np.array([c.client_id for c in contexts], dtype=np.int64)
        batch = self.gather(clients, contexts)
        masks = opt.client_masks(contexts, self.model)
        loss_args = opt.client_loss_args(contexts, self.model)
        private = {k: torch.stack([self.private_store[k].get(int(c), self.params[k]) for c in clients])
                   for k in self.private_store} or None
        updates = self.engine.client_updates(self.model, self.params, batch, contexts, cfg.local_training, cfg.client_lr,
                                             masks, summed=opt.is_linear() and not self.private, private=private,
                                             loss_args=loss_args or None, optimizer=cfg.client_optimizer)
        updates = self.keep_private(updates, clients, private)
        updates = opt.encode(updates)
        bits = to_numpy(opt.upload_bits(updates))
        updates = opt.decode(updates)
        update = opt.aggregate(updates)
        self.server.step(self.params, update)
        opt.after_step(self.params, round_)
        w = updates.weights
        loss = float((updates.loss * w).sum() / w.sum())
        if not math.isfinite(loss):
            raise DivergenceError(f"round {round_}: training loss is {loss}")
        costs = self.system.costs(contexts, bits, self.passes(updates), opt.compute_fraction(contexts, self.model))
        tiers = np.array([c.tier for c in contexts])
        T = self.tiers.n_tiers
        self.cost["upload_bits"] += np.bincount(tiers, weights=bits, minlength=T)
        self.cost["compute_s"] += np.bincount(tiers, weights=costs.compute_s, minlength=T)
        self.cost["participations"] += np.bincount(tiers, minlength=T)
        kept = {c.client_id for c in contexts}
        self.cost["dropped"] += np.bincount([c.tier for c in candidates if c.client_id not in kept], minlength=T).astype(np.int64)
        row = {"round": round_, "epoch": epoch, "selected": int(chosen.size), "participants": int(clients.size),
               "samples": int(w.sum()), "train_loss": loss, "upload_mb": float(bits.sum()) / 8e6,
               "sim_round_s": float(costs.total_s.max())}
        if updates.epochs_kept is not None:  # the validation hold-out (rf2.clients.local): what it chose
            v = updates.valid_loss
            ok = torch.isfinite(v)
            row.update({"local_epochs_run": float(updates.epochs_run.float().mean()),
                        "local_epochs_kept": float(updates.epochs_kept.float().mean()),
                        "local_valid_loss": float((v[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() else float("nan")})
        return row

    def gather(self, clients: np.ndarray, contexts) -> RoundBatch:
        """The round's training samples of ``clients``: their training events, plus with
        ``train_negatives`` that many negatives per positive drawn afresh from each client's
        round stream (:mod:`rf2.clients.negatives`; ``fedem-method.md`` §2.7)."""
        k = self.config.train_negatives
        if not k:
            return RoundBatch.gather(self.dataset, self.encoder, clients)
        return RoundBatch.gather(self.dataset, self.encoder, clients, negatives=k, seeds=[c.seed for c in contexts],
                                 exclude_eval_negatives=self.config.train_negatives_avoid_eval,
                                 pool=self.config.train_negatives_pool)

    def passes(self, updates) -> np.ndarray | int:
        """Per client, how many times its samples went through a step this round (local steps x
        local epochs trained), for the system model's compute time."""
        if updates.epochs_run is None:
            return self.config.local_steps * self.config.local_epochs
        return self.config.local_steps * to_numpy(updates.epochs_run)

    def keep_private(self, updates, clients: np.ndarray, private: dict | None):
        """Each client keeps its trained private parameters (HeteFedRec §III): client-keyed table rows
        are written back as trained; dense ones go to the client's own store. Returns the public rest."""
        if not self.private:
            return updates
        public, dense, tables = updates.split_private(self.private)
        with torch.no_grad():
            for k, t in tables.items():
                self.params[k].index_add_(0, t.rows, t.values)
            for k, d in dense.items():
                for i, c in enumerate(clients.tolist()):
                    self.private_store[k][c] = private[k][i] + d[i]
        return public

    def full_round_time(self, contexts) -> np.ndarray:
        """Each candidate's simulated time to train and upload the full 32-bit model (seconds)."""
        return self.system.costs(contexts, np.full(len(contexts), self.full_bits),
                                 self.config.local_steps * self.config.local_epochs).total_s

    @on_device
    def run(self) -> RunResult:
        if not self.optimization.collaborative:  # Standalone: no server, every client alone
            from rf2.standalone import run_standalone

            return run_standalone(self)
        if self.optimization.personalised:  # clients keep whole models (FedEM)
            from rf2.personalised import run_personalised

            return run_personalised(self)
        if self.config.select_by == "test":
            raise ValueError(f"select_by = 'test' (the round with the best test HR, FedEM's code) is offered for "
                             f"personalised runs (fedem) only; optimization {self.config.optimization!r}: use 'valid'")
        t0 = time.perf_counter()
        plan = self.schedule()
        self.check_memory()
        log = []
        bar = tqdm(plan, desc=f"{self.config.optimization} | {self.tiers.spec}", unit="round",
                   disable=not self.progress, leave=False, dynamic_ncols=True)
        cfg = self.config
        best = None  # (validation HR, round, parameters) with select_by = "valid"
        for round_, (epoch, chosen) in enumerate(bar):
            ts = time.perf_counter()
            row = self.train_round(round_, epoch, chosen)
            row["seconds"] = time.perf_counter() - ts
            if cfg.valid_every and ((round_ + 1) % cfg.valid_every == 0 or round_ == len(plan) - 1):
                row.update(self.validate())
                hr = row[f"valid_loo_hr@{cfg.sampled_k}"]
                if cfg.select_by == "valid" and (best is None or hr > best[0]):  # earliest round wins ties
                    best = (hr, round_, {k: p.detach().clone() for k, p in self.params.items()},
                            {k: dict(v) for k, v in self.private_store.items()})
            log.append(row)
            bar.set_postfix(loss=f"{row['train_loss']:.4f}", refresh=False)
        bar.close()
        if best is not None:  # evaluate the model of the round with the best validation HR
            with torch.no_grad():
                for k, p in best[2].items():
                    self.params[k].copy_(p)
            self.private_store = best[3]
        for k, p in self.params.items():
            if not torch.isfinite(p).all():
                raise DivergenceError(f"parameter {k} is not finite after training")
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        metrics = self.evaluate()
        metrics = self._with_costs(metrics, pd.DataFrame(log))
        if best is not None:
            metrics = TierMetrics(pd.concat([metrics.frame, pd.DataFrame([{
                "tier": OVERALL, "metric": "selected_round", "value": float(best[1]),
                **metrics.frame.loc[metrics.frame["tier"] == OVERALL, ["n_events", "n_users"]].iloc[0].to_dict()}])],
                ignore_index=True), metrics.tier_names)
        return RunResult(
            config=self.config, metrics=metrics, rounds=pd.DataFrame(log), tiers=self.tiers,
            seconds={"load": self.load_seconds, "train": train_s, "eval": time.perf_counter() - t1},
            peak_rss_mb=peak_rss_mb(), scores=self.eval_scores,
        )

    def _with_costs(self, metrics: TierMetrics, rounds: pd.DataFrame) -> TierMetrics:
        """Add the system-model totals to the tidy metrics: per tier upload MB, compute hours,
        participations and drops; overall the same plus the simulated wall-clock hours."""
        rows = []
        sizes = metrics.frame.drop_duplicates("tier").set_index("tier")[["n_events", "n_users"]]
        names = list(self.tiers.names) + [OVERALL]
        per_tier = {
            "upload_mb": np.r_[self.cost["upload_bits"], self.cost["upload_bits"].sum()] / 8e6,
            "compute_h": np.r_[self.cost["compute_s"], self.cost["compute_s"].sum()] / 3600,
            "participations": np.r_[self.cost["participations"], self.cost["participations"].sum()],
            "dropped": np.r_[self.cost["dropped"], self.cost["dropped"].sum()],
        }
        for metric, values in per_tier.items():
            for name, v in zip(names, values):
                rows.append((name, metric, float(v), *sizes.loc[name].tolist()))
        wall = float(rounds["sim_round_s"].sum()) / 3600 if len(rounds) else 0.0
        rows.append((OVERALL, "sim_wall_h", wall, *sizes.loc[OVERALL].tolist()))
        extra = pd.DataFrame(rows, columns=["tier", "metric", "value", "n_events", "n_users"])
        return TierMetrics(pd.concat([metrics.frame, extra], ignore_index=True), metrics.tier_names)

    # -- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    @on_device
    def predict(self, idx: np.ndarray) -> np.ndarray:
        if self.private_dense:
            return self._predict_private(idx)
        was = self.model.training
        self.model.eval()
        # one array written batch by batch: keeping every batch's output alive instead (views of
        # small tensors between the large freed temporaries) fragmented the heap, +1.6 GB per 2M
        # events at Taobao size (benchmarks/README.md, issue 15)
        out = np.empty(idx.size, dtype=np.float32)
        bs = self.config.eval_batch_size
        for a in range(0, idx.size, bs):
            out[a : a + bs] = to_numpy(self.model(self.encoder.encode(idx[a : a + bs])))
        self.model.train(was)
        return out

    def _predict_private(self, idx: np.ndarray) -> np.ndarray:
        """Scores with each user's own private dense parameters (one forward pass per user)."""
        from torch.func import functional_call

        was = self.model.training
        self.model.eval()
        out = np.zeros(idx.size, dtype=np.float32)
        users = self.dataset.user[idx]
        order = np.argsort(users, kind="stable")
        bounds = np.flatnonzero(np.diff(users[order])) + 1
        for part in np.split(order, bounds):
            if part.size == 0:
                continue
            u = int(users[part[0]])
            p = {**self.params, **{k: self.private_store[k].get(u, self.params[k]) for k in self.private_store}}
            out[part] = to_numpy(functional_call(self.model, p, (self.encoder.encode(idx[part]),)))
        self.model.train(was)
        return out

    @on_device
    def evaluate(self) -> TierMetrics:
        """Per-tier AUC and log loss on the test events; on a leave-one-out dataset with
        ``sampled_k``, the test events are each user's candidates (its test item, label 1, and its
        99 evaluation negatives, label 0): a one-class test set has no AUC, and every run of the
        protocol (FedEM's personal models too, :mod:`rf2.personalised`) then scores the same
        events, so intervals pair them."""
        ds = self.dataset
        if self.config.sampled_k and ds.eval_negatives is not None:
            return self._evaluate_candidates()
        idx = ds.test_index
        logits = self.predict(idx)
        if not np.isfinite(logits).all():
            raise DivergenceError(f"{int((~np.isfinite(logits)).sum())} of {logits.size} test predictions are not finite")
        users = ds.user[idx]
        metrics = tier_metrics(ds.label[idx], logits, self.tiers.tier[users], users, self.tiers.names)
        per_user = None
        if self.config.ranking_k:
            from rf2.evaluation.ranking import ranking_by_user, ranking_frame

            per_user = ranking_by_user(self.model, ds, self.encoder, k=self.config.ranking_k,
                                       exclude=self.config.ranking_exclusion, progress=self.progress)
            ranking = ranking_frame(per_user, self.tiers.tier, self.tiers.names)
            metrics = TierMetrics(pd.concat([metrics.frame, ranking], ignore_index=True), metrics.tier_names)
        self.eval_scores = EvalScores.from_run(users, self.tiers.tier[users], ds.label[idx], logits, self.tiers.names,
                                               self.tiers.tier, per_user)
        return metrics

    def _evaluate_candidates(self) -> TierMetrics:
        from rf2.evaluation.sampled import candidates, score_candidates

        ds, k = self.dataset, self.config.sampled_k
        users, items = candidates(ds, "test")
        logits = score_candidates(self.model, ds, self.encoder, users, items)
        if not np.isfinite(logits).all():
            raise DivergenceError(f"{int((~np.isfinite(logits)).sum())} of {logits.size} candidate scores are not finite")
        metrics, per_user = candidate_metrics(users, items, logits, k, self.tiers.tier, self.tiers.names)
        if self.config.ranking_k:
            from rf2.evaluation.ranking import ranking_by_user, ranking_frame

            ranked = ranking_by_user(self.model, ds, self.encoder, k=self.config.ranking_k,
                                     exclude=self.config.ranking_exclusion, progress=self.progress)
            metrics = TierMetrics(pd.concat([metrics.frame, ranking_frame(ranked, self.tiers.tier, self.tiers.names)],
                                            ignore_index=True), metrics.tier_names)
            per_user = ranked.join(per_user.drop(columns="n_relevant"), how="outer")
        ev_users, labels = candidate_events(users, items)
        self.eval_scores = EvalScores.from_run(ev_users, self.tiers.tier[ev_users], labels, logits.ravel(),
                                               self.tiers.names, self.tiers.tier, per_user)
        return metrics

    @on_device
    def validate(self) -> dict[str, float]:
        """Sampled HR/NDCG@``sampled_k`` on the validation items (each user's second newest
        interaction among it + the same evaluation negatives as test), overall (mean over users):
        ``valid_loo_hr@K``, ``valid_loo_ndcg@K`` for the round's row of the rounds table."""
        from rf2.evaluation.sampled import sampled_by_user

        per_user = sampled_by_user(self.model, self.dataset, self.encoder, k=self.config.sampled_k, split="valid")
        return {f"valid_{c}": float(per_user[c].mean()) for c in per_user.columns if "@" in c}


def candidate_events(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flat events of ``[users, 1 + negatives]`` candidates, row by row: each event's user and
    its label (1 for column 0, the held-out item; 0 for the negatives)."""
    labels = np.zeros(items.shape, dtype=np.int64)
    labels[:, 0] = 1
    return np.repeat(users, items.shape[1]), labels.ravel()


def candidate_metrics(users: np.ndarray, items: np.ndarray, logits: np.ndarray, k: int, user_tier: np.ndarray,
                      tier_names) -> tuple[TierMetrics, pd.DataFrame]:
    """Leave-one-out metrics from ``[users, 1 + negatives]`` candidate scores (column 0 the test
    item): per tier the AUC and log loss of the positives against the negatives, and
    ``loo_hr@k`` / ``loo_ndcg@k``; also the per-user frame (for :class:`EvalScores`)."""
    from rf2.evaluation.sampled import sampled_frame, sampled_from_scores

    ev_users, labels = candidate_events(users, items)
    metrics = tier_metrics(labels, np.asarray(logits).ravel(), user_tier[ev_users], ev_users, tier_names)
    per_user = sampled_from_scores(users, logits, k)
    frame = sampled_frame(per_user, user_tier, tier_names)
    return TierMetrics(pd.concat([metrics.frame, frame], ignore_index=True), metrics.tier_names), per_user


def run(config: RunConfig, **kw) -> RunResult:
    return Simulation(config, **kw).run()
