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


@dataclass(frozen=True)
class RunConfig:
    dataset: str = _f("ml-100k", "dataset name (see `rf2 list`)")
    dataset_options: dict = _f({}, "dataset loader options, e.g. {click_threshold = 4} or {n_users = 5000}")
    model: str = _f("dlrm", "model name (see `rf2 list`)")
    model_options: dict = _f({}, "model options, e.g. {embedding_dim = 16}")
    mapping: str = _f("random", "tier mapping: random | dirichlet:ALPHA[:unbalanced] | hetero-vlow..hetero-vhigh")
    n_tiers: int = _f(3, "number of device tiers (RF²: 3, low/mid/high)")
    optimization: str = _f("none", "tier-aware optimisation spec (see `rf2 list`)")
    seed: int = _f(0, "seed for tiers, model init, client selection and every client's randomness")
    clients_per_round: int = _f(32, "K: clients selected per round (without repetition within an epoch)")
    epochs: int = _f(1, "passes over all clients (RF²: 1, every client selected exactly once)")
    max_rounds: int = _f(0, "stop after this many rounds (0: no limit); for quick looks")
    local_steps: int = _f(1, "full-batch SGD steps each client takes per round (RF²: 1)")
    client_lr: float = _f(1.0, "client SGD learning rate (RF² §5.1: 1.0)")
    server_optimizer: str = _f("adagrad", "server optimiser applied to the averaged update: adagrad | sgd")
    server_lr: float = _f(0.1, "server learning rate (RF² §5.1: 0.1 for MovieLens, 0.01 for Taobao)")
    system_options: dict = _f({}, "device profile overrides per tier, e.g. {low = {upload_mbps = 2.0}} (rf2.system)")
    engine: str = _f("batched", "how client updates are computed: batched (vmap, fast) | reference (loop)")
    eval_batch_size: int = _f(65536, "test events scored per forward pass")

    def __post_init__(self) -> None:
        positive_ints = ("n_tiers", "clients_per_round", "epochs", "local_steps", "eval_batch_size")
        for name in positive_ints:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"config: {name} must be an integer >= 1, got {v!r}")
        if self.n_tiers < 2:
            raise ValueError(f"config: n_tiers must be >= 2, got {self.n_tiers}")
        if not isinstance(self.max_rounds, int) or self.max_rounds < 0:
            raise ValueError(f"config: max_rounds must be an integer >= 0 (0 = no limit), got {self.max_rounds!r}")
        for name in ("client_lr", "server_lr"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0 or v != v or v == float("inf"):
                raise ValueError(f"config: {name} must be a positive finite number, got {v!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"config: engine must be one of {ENGINES}, got {self.engine!r}")
        for name in ("dataset_options", "model_options", "system_options"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"config: {name} must be a table/dict, got {getattr(self, name)!r}")
        # names: checked against the registries, so a typo fails before any data is loaded
        from optimizations import parse_optimization
        from tier_mapping import parse_mapping

        from rf2.data import DATASETS, dataset_options
        from rf2.models import model_options
        from rf2.servers import SERVER_OPTIMIZERS

        if self.dataset not in DATASETS:
            raise ValueError(f"config: unknown dataset {self.dataset!r}; available: {sorted(DATASETS)}")
        bad = sorted(set(self.dataset_options) - set(dataset_options(self.dataset)))
        if bad:
            raise ValueError(f"config: dataset {self.dataset!r} has no option(s) {bad}; its options: {sorted(dataset_options(self.dataset))}")
        bad = sorted(set(self.model_options) - set(model_options(self.model)))
        if bad:
            raise ValueError(f"config: model {self.model!r} has no option(s) {bad}; its options: {sorted(model_options(self.model))}")
        if self.server_optimizer not in SERVER_OPTIMIZERS:
            raise ValueError(f"config: server_optimizer must be one of {sorted(SERVER_OPTIMIZERS)}, got {self.server_optimizer!r}")
        parse_mapping(self.mapping)
        parse_optimization(self.optimization)

    # -- (de)serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"config: unknown setting(s) {unknown}; known settings: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_toml(cls, path: str | Path, section: str | None = None) -> "RunConfig":
        return cls.from_dict(load_toml(path, section))

    def replace(self, **changes) -> "RunConfig":
        return replace(self, **changes)


def load_toml(path: str | Path, section: str | None = None) -> dict[str, Any]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from exc
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
