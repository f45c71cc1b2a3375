"""One run's configuration: a frozen, validated dataclass, loadable from TOML and flags.

Every field has a one-line description (its ``help``); the command line is generated from these
fields, so a new setting needs only a new field here.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any


def _f(default, help: str, **kw):
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


ENGINES = ("batched", "reference")
#: ``ranking_exclude``: ``auto`` or one of :data:`rf2.evaluation.ranking.EXCLUDE_CHOICES`
RANKING_EXCLUDE = ("auto", "train", "train_clicks", "none")
#: which round's model is evaluated on test (``select_by``)
SELECT_BY = ("last", "valid", "test")
#: upper bounds that keep a typo (``epochs = 1000000000``) from running for ever: far above any
#: published protocol (RF²: 1 epoch, 1 step; HeteFedRec: 20 epochs)
MAX_EPOCHS = 10_000
MAX_LOCAL_STEPS = 10_000
MAX_LOCAL_EPOCHS = 1_000


def _finite_positive(v) -> bool:
    try:
        return 0 < float(v) < float("inf")
    except OverflowError:  # an int too large for a float
        return False


#: what training negatives are drawn from (:func:`rf2.clients.negatives.sample_training_negatives`)
TRAIN_NEGATIVE_POOLS = ("unrated", "untrained")


@dataclass(frozen=True)
class RunConfig:
    dataset: str = _f("ml-100k", "dataset name (see `rf2 list`)")
    dataset_options: dict = _f({}, "dataset loader options, e.g. click_threshold=4 or '{n_users = 5000}'")
    model: str = _f("dlrm", "model name (see `rf2 list`)")
    model_options: dict = _f({}, "model options, e.g. embedding_dim=16 or '{embedding_dim = 16}'")
    mapping: str = _f("random", "tier mapping: random | dirichlet:ALPHA[:unbalanced] | hetero-vlow..hetero-vhigh")
    n_tiers: int = _f(3, "number of device tiers (RF²: 3, low/mid/high)")
    optimization: str = _f("none", "tier-aware optimisation spec (see `rf2 list`)")
    seed: int = _f(0, "seed for tiers, model init, client selection and every client's randomness")
    replicate: int = _f(0, "training replicate: k >= 1 retrains with other model-init/selection/client seeds but the "
                           "same tiers (the noise-floor runs of rf2.evaluation.uncertainty); 0 = the run itself")
    clients_per_round: int = _f(32, "K: clients selected per round (without repetition within an epoch)")
    epochs: int = _f(1, f"passes over all clients (RF²: 1, every client selected exactly once; at most {MAX_EPOCHS})")
    max_rounds: int = _f(0, "stop after this many rounds (0: no limit); for quick looks")
    local_steps: int = _f(1, f"optimiser steps each client takes on each local batch (RF²: 1 step on the whole data; "
                             f"at most {MAX_LOCAL_STEPS})")
    local_epochs: int = _f(1, f"passes each client makes over its data per round (RF²: 1; FedEM: 10; at most {MAX_LOCAL_EPOCHS})")
    local_batch_size: int = _f(0, "samples per local mini-batch, shuffled every epoch from the client's stream "
                                  "(0: the whole data as one batch, RF²; FedEM: 256)")
    local_early_stop: str = _f("none", "stop a client's local epochs early: none | cumulative_mean (FedEM's rule on the "
                                       "running mean batch loss) | per_epoch (the same test on each epoch's mean)")
    local_early_stop_threshold: float = _f(1e-4, "early stop when |L_e - L_(e-1)| / |L_(e-1) + 1e-5| is below this "
                                                 "(FedEM: 1e-4)")
    local_valid_fraction: float = _f(0.0, "share of each client's round samples held out (not trained on) to pick its "
                                          "local epoch: stop at the first epoch whose held-out loss does not improve "
                                          "and return the epoch before (HeteFedRec §V-A: 0.1; 0: off)")
    train_negatives: int = _f(0, "leave-one-out datasets: training negatives per positive, re-drawn every round from "
                                 "items the user never rated (0: none; FedEM: 4)")
    train_negatives_avoid_eval: bool = _f(False, "training negatives also avoid the user's evaluation negatives "
                                                 "(FedEM's code: false, they may coincide)")
    train_negatives_pool: str = _f("unrated", "what training negatives are drawn from: unrated (items the user never "
                                              "rated, so never its test items: FedEM's code, HeteFedRec §V-A's text) | "
                                              "untrained (items the user has no training event with: its test items "
                                              "can be drawn, as a client cannot know its future)")
    client_lr: float = _f(1.0, "client learning rate (RF² §5.1: SGD 1.0; HeteFedRec §V-D: Adam 0.001)")
    client_optimizer: str = _f("sgd", "client optimiser for the local steps: sgd | adam (fresh state every round)")
    server_optimizer: str = _f("adagrad", "server optimiser applied to the averaged update: adagrad | sgd")
    server_lr: float = _f(0.1, "server learning rate (RF² §5.1: 0.1 for MovieLens, 0.01 for Taobao)")
    system_options: dict = _f({}, "device profile overrides per tier, e.g. '{low = {upload_mbps = 2.0}}' or "
                                     "'low={upload_mbps = 2.0}' (rf2.system)")
    engine: str = _f("batched", "how client updates are computed: batched (vmap, fast) | reference (loop)")
    device: str = _f("cpu", "torch device every tensor of the run lives on: cpu | cuda | cuda:N | mps (only cpu is "
                            "tested; see the README's Devices section)")
    eval_batch_size: int = _f(8192, "test events scored per forward pass: speed and memory only (the scores do not "
                                    "depend on it, so it is not part of a run's id)")
    ranking_k: int = _f(0, "also rank every item per user: NDCG@K and Recall@K per tier (0: off; HeteFedRec: 20)")
    ranking_exclude: str = _f("auto", "items left out of a user's ranking: auto (train_clicks on implicit data such as "
                                      "ml-1m-implicit, HeteFedRec §V-B; train elsewhere) | train (all its training "
                                      "items) | train_clicks (training clicks only) | none")
    sampled_k: int = _f(0, "leave-one-out datasets (split = 'leave-one-out'): HR@K and NDCG@K of each user's test item "
                           "among it + its 99 evaluation negatives, ties against it (0: off; FedEM: 10)")
    valid_every: int = _f(0, "with sampled_k: validation HR/NDCG every N rounds and after the last, a curve in the rounds "
                             "table (0: off)")
    select_by: str = _f("last", "model evaluated on test: last (the final round) | valid (the round with the best "
                                "validation HR@sampled_k; needs valid_every) | test (best test HR, FedEM's code; fedem "
                                "only, flagged selected_on_test in the results)")

    def __post_init__(self) -> None:
        for name in ("dataset", "model", "mapping", "optimization", "server_optimizer", "engine", "client_optimizer",
                     "ranking_exclude", "select_by", "local_early_stop", "device"):
            v = getattr(self, name)
            if not isinstance(v, str):
                raise ValueError(f"config: {name} must be a string, got {v!r}")
        positive_ints = ("n_tiers", "clients_per_round", "epochs", "local_steps", "local_epochs", "eval_batch_size")
        for name in positive_ints:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"config: {name} must be an integer >= 1, got {v!r}")
        for name, bound in (("epochs", MAX_EPOCHS), ("local_steps", MAX_LOCAL_STEPS), ("local_epochs", MAX_LOCAL_EPOCHS)):
            if getattr(self, name) > bound:
                raise ValueError(f"config: {name} must be an integer in [1, {bound}], got {getattr(self, name)}")
        from rf2.device import check_device_name

        check_device_name(self.device)
        from tier_mapping import MAX_TIERS

        if not 2 <= self.n_tiers <= MAX_TIERS:
            raise ValueError(f"config: n_tiers must be an integer in [2, {MAX_TIERS}] (RF²: 3), got {self.n_tiers}")
        for name in ("seed", "replicate", "max_rounds", "ranking_k", "sampled_k", "valid_every", "local_batch_size",
                     "train_negatives"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                hint = " (0 = no limit)" if name == "max_rounds" else ""
                raise ValueError(f"config: {name} must be an integer >= 0{hint}, got {v!r}")
        if not isinstance(self.train_negatives_avoid_eval, bool):
            raise ValueError(f"config: train_negatives_avoid_eval must be true or false, got {self.train_negatives_avoid_eval!r}")
        if self.train_negatives_pool not in TRAIN_NEGATIVE_POOLS:
            raise ValueError(f"config: train_negatives_pool must be one of {list(TRAIN_NEGATIVE_POOLS)}, "
                             f"got {self.train_negatives_pool!r}")
        if self.train_negatives_pool != "unrated" and not self.train_negatives:
            raise ValueError(f"config: train_negatives_pool = {self.train_negatives_pool!r} only matters with drawn "
                             "training negatives; set train_negatives (e.g. 4) or leave the pool at 'unrated'")
        from rf2.clients.local import EARLY_STOP

        if self.local_early_stop not in EARLY_STOP:
            raise ValueError(f"config: local_early_stop must be one of {EARLY_STOP}, got {self.local_early_stop!r}")
        v = self.local_early_stop_threshold
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not (v == 0 or _finite_positive(v)):
            raise ValueError(f"config: local_early_stop_threshold must be a finite number >= 0, got {v!r}")
        v = self.local_valid_fraction
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 1:
            raise ValueError(f"config: local_valid_fraction must be a number in [0, 1) (HeteFedRec: 0.1), got {v!r}")
        if v and self.local_epochs == 1:
            raise ValueError(f"config: local_valid_fraction = {v} picks the best of several local epochs, but "
                             "local_epochs = 1; set local_epochs > 1 or local_valid_fraction = 0")
        if v and self.local_early_stop != "none":
            raise ValueError(f"config: local_valid_fraction = {v} stops on the held-out loss and local_early_stop = "
                             f"{self.local_early_stop!r} on the training loss; choose one (local_early_stop = 'none' "
                             "or local_valid_fraction = 0)")
        if self.local_early_stop != "none" and self.local_epochs == 1:
            raise ValueError(f"config: local_early_stop = {self.local_early_stop!r} stops between local epochs, but "
                             "local_epochs = 1; set local_epochs > 1 or local_early_stop = 'none'")
        for name in ("client_lr", "server_lr"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not _finite_positive(v):
                raise ValueError(f"config: {name} must be a positive finite number, got {v!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"config: engine must be one of {ENGINES}, got {self.engine!r}")
        from rf2.clients.optim import CLIENT_OPTIMIZERS

        if self.select_by not in SELECT_BY:
            raise ValueError(f"config: select_by must be one of {SELECT_BY}, got {self.select_by!r}")
        if self.valid_every and not self.sampled_k:
            raise ValueError("config: valid_every needs sampled_k >= 1 (validation HR/NDCG are sampled metrics)")
        if self.select_by in ("valid", "test") and not self.valid_every:
            raise ValueError(f"config: select_by = {self.select_by!r} needs valid_every >= 1 (rounds with a score)")
        if self.ranking_exclude not in RANKING_EXCLUDE:
            raise ValueError(f"config: ranking_exclude must be one of {RANKING_EXCLUDE}, got {self.ranking_exclude!r}")

        if self.client_optimizer not in CLIENT_OPTIMIZERS:
            raise ValueError(f"config: client_optimizer must be one of {CLIENT_OPTIMIZERS}, got {self.client_optimizer!r}")
        for name in ("dataset_options", "model_options", "system_options"):
            v = getattr(self, name)
            if not isinstance(v, dict):
                raise ValueError(f"config: {name} must be a table/dict, got {v!r}")
            bad = [k for k in v if not isinstance(k, str)]
            if bad:
                raise ValueError(f"config: {name} keys must be strings (option names), got {bad}")
        # names: checked against the registries, so a typo fails before any data is loaded
        from optimizations import parse_optimization
        from tier_mapping import parse_mapping, tier_names

        from rf2.data import DATASETS, dataset_options
        from rf2.models import MODELS, model_options
        from rf2.servers import SERVER_OPTIMIZERS
        from rf2.system import SystemModel

        if self.dataset not in DATASETS:
            raise ValueError(f"config: unknown dataset {self.dataset!r}; available: {sorted(DATASETS)}")
        bad = sorted(set(self.dataset_options) - set(dataset_options(self.dataset)))
        if bad:
            raise ValueError(f"config: dataset_options: dataset {self.dataset!r} has no option(s) {bad}; "
                             f"its options: {sorted(dataset_options(self.dataset))}")
        check = getattr(DATASETS[self.dataset], "check_options", None)
        if callable(check):  # a loader may check option values without loading anything
            try:
                check(**self.dataset_options)
            except ValueError as exc:
                raise ValueError(f"config: dataset_options: {exc}") from None
        if self.model not in MODELS:
            raise ValueError(f"config: unknown model {self.model!r}; available: {sorted(MODELS)}")
        bad = sorted(set(self.model_options) - set(model_options(self.model)))
        if bad:
            raise ValueError(f"config: model_options: model {self.model!r} has no option(s) {bad}; "
                             f"its options: {sorted(model_options(self.model))}")
        _check_option_types("model_options", self.model_options, model_options(self.model))
        if self.server_optimizer not in SERVER_OPTIMIZERS:
            raise ValueError(f"config: server_optimizer must be one of {sorted(SERVER_OPTIMIZERS)}, got {self.server_optimizer!r}")
        kind, param, _ = parse_mapping(self.mapping)
        if kind == "activity" and param is not None and len(param) != self.n_tiers:
            raise ValueError(f"config: mapping {self.mapping!r} has {len(param)} ratio parts but n_tiers={self.n_tiers}; "
                             "give one part per tier, lowest first")
        names = tier_names(self.n_tiers)
        # the optimisation must fit the run's tiers (one value per tier for prune/quant/channel)
        parse_optimization(self.optimization).validate(names)
        try:
            SystemModel(names, self.system_options)
        except (TypeError, ValueError) as exc:  # e.g. a profile field that is not a number
            msg = str(exc)
            raise ValueError(f"config: {msg}" if msg.startswith("system_options") else f"config: system_options: {msg}") from None

    @property
    def ranking_exclusion(self) -> str:
        """``ranking_exclude`` with ``auto`` resolved (README, "Ranking metrics"; HeteFedRec §V-B):
        ``train_clicks`` on implicit-feedback datasets (:func:`rf2.data.implicit_feedback`:
        ``ml-1m-implicit``, whose training non-clicks are sampled negatives, not interactions, so
        they stay candidates), ``train`` on every other dataset (rf2's default before ``auto``
        existed). Without ranking (``ranking_k = 0``) ``auto`` is ``train``: nothing is ranked, and
        the run keeps the id it had before ``auto`` (:func:`rf2.sweep.run_id`)."""
        if self.ranking_exclude != "auto":
            return self.ranking_exclude
        from rf2.data import implicit_feedback

        return "train_clicks" if self.ranking_k and implicit_feedback(self.dataset) else "train"

    # -- (de)serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every setting, ``ranking_exclude = "auto"`` written as what it resolves to
        (:attr:`ranking_exclusion`): results rows, run ids and stored configs name the exclusion a
        run used, so a run under ``auto`` pairs with (and has the id of) one that spelled it out."""
        d = asdict(self)
        d["ranking_exclude"] = self.ranking_exclusion
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        if not isinstance(d, dict):
            raise ValueError(f"config: expected a table of settings, got {d!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known, key=repr)
        if unknown:
            raise ValueError(f"config: unknown setting(s) {unknown}; known settings: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_toml(cls, path: str | Path, section: str | None = None) -> "RunConfig":
        return cls.from_dict(load_toml(path, section))

    @property
    def local_training(self):
        """How each client trains in a round (:class:`rf2.clients.local.LocalTraining`)."""
        from rf2.clients.local import LocalTraining

        return LocalTraining(epochs=self.local_epochs, batch_size=self.local_batch_size, steps=self.local_steps,
                             early_stop=self.local_early_stop, threshold=float(self.local_early_stop_threshold),
                             valid_fraction=float(self.local_valid_fraction))

    def replace(self, **changes) -> "RunConfig":
        return replace(self, **changes)


def _kind(v) -> str | None:
    """The TOML kind an option's default asks for (None: anything goes)."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "str"
    if isinstance(v, (list, tuple)):
        return "list"
    return None


def _check_option_types(what: str, given: dict, defaults: dict) -> None:
    """An option whose default is a bool/int/number/string/list takes only that kind of value
    (an int where a number is asked is fine), so ``embedding_dim = 16.5`` is a ValueError here and
    not a TypeError deep in a model's constructor."""
    ok = {"bool": lambda x: isinstance(x, bool),
          "int": lambda x: isinstance(x, int) and not isinstance(x, bool),
          "number": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
          "str": lambda x: isinstance(x, str),
          "list": lambda x: isinstance(x, (list, tuple))}
    names = {"bool": "true or false", "int": "an integer", "number": "a number", "str": "a string", "list": "a list"}
    for k, v in given.items():
        kind = _kind(defaults.get(k))
        if kind is not None and v is not None and not ok[kind](v):
            raise ValueError(f"config: {what}: {k} must be {names[kind]} (default {defaults[k]!r}), got {v!r}")


def load_toml(path: str | Path, section: str | None = None) -> dict[str, Any]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"config file {path} is a directory; give a TOML file") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"config file {path} is not UTF-8 text, so not TOML ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from exc
    except RecursionError:
        raise ValueError(f"config file {path} nests arrays or tables too deeply to read") from None
    if section is not None:
        if section not in data or not isinstance(data[section], dict):
            raise ValueError(f"config file {path} has no [{section}] table")
        data = data[section]
    return data


def config_fields() -> list[tuple[str, type, Any, str]]:
    """(name, type, default, help) of every setting, for building command lines."""
    out = []
    for f in fields(RunConfig):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        out.append((f.name, type(default), default, f.metadata.get("help", "")))
    return out
