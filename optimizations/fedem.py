"""FedEM, personalised model merging (Chen et al., AAAI 2026; ``fedem-method.md``).

Every client keeps a whole personal FCF model (``model = "fcf"``): user embedding, a full local
item table and an adapter. Each round, clients that received a personalised global table last
round merge it into their own (elastic merge, §4.1), train locally (§4.2; set ``local_epochs``,
``local_batch_size``, ``local_early_stop`` and ``train_negatives`` in the run), and a sampled
share of them (``agg_ratio``) upload their tables; the server sends each of those back its own
weighted mix of the uploaded tables (§4.4, :mod:`rf2.aggregation.personalised`). There is no
global model. The round is :mod:`rf2.personalised`; client training :mod:`rf2.clients.fedem`.

Spec ``fedem[:key=value ...]``; every default is the authors' code (§6), every oddity of §7 an
option:

=================  ======================  ==========================================================
key                default                 meaning
=================  ======================  ==========================================================
``alpha``          0.9                     similarity weight α in ``w_k = Π_Δ(p + α S_k)``
``agg``            both                    both (FedEM) | avg (every row = data-size weights) |
                                           sim (normalised similarity) | none (local only)
``sim``            l2                      l2: ``1/(1+distance)`` | cos
``clip``           0.9                     similarities above this become 1
``agg_ratio``      0.1                     share of the round's participants aggregated (§4.4 step 1)
``rho``            adapter                 adapter | a number in [0, 1] (fixed merge weight; 1 =
                                           static replacement)
``lr_adapter``     0.1                     Adam learning rate of the adapter (``client_lr`` is the
                                           embeddings')
``pca_sign``       as_returned             as_returned (whatever the SVD gives, §7.4) | canonical
``g``              latest                  latest: only last round's aggregated clients hold a G
                                           (§7.2) | keep: a client keeps its last G
``merge_start``    on                      merge at round start (§4.1)
``merge_forward``  on                      merge inside every forward pass (§4.2, §7.3)
``init``           shared                  shared: every client starts with the same user embedding
                                           and adapter (§7.9) | per_client
=================  ======================  ==========================================================

Baselines (issue 13 §4): ``fedem:agg=avg:rho=1:merge_forward=off`` (FCF with FedAvg over the
aggregated clients, static replacement; ``model = "fcf"`` with ``none`` is FCF under plain
FedAvg with one global table), ``fedem:agg=none`` (local only), ``fedem:rho=1:merge_forward=off``
(FedEM's weights, static replacement), ``fedem:rho=0.5`` (no adapter, fixed ρ).
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import Optimization

FEDEM_USAGE = ("use fedem[:alpha=0.9][:agg=both|avg|sim|none][:sim=l2|cos][:clip=0.9][:agg_ratio=0.1]"
               "[:rho=adapter|R][:lr_adapter=0.1][:pca_sign=as_returned|canonical][:g=latest|keep]"
               "[:merge_start=on|off][:merge_forward=on|off][:init=shared|per_client]")


@dataclass(frozen=True)
class FedEMSettings:
    alpha: float = 0.9
    agg: str = "both"
    sim: str = "l2"
    clip: float = 0.9
    agg_ratio: float = 0.1
    rho: float | None = None  # None: the adapter
    lr_adapter: float = 0.1
    pca_sign: str = "as_returned"
    g: str = "latest"
    merge_start: bool = True
    merge_forward: bool = True
    init: str = "shared"


_CHOICES = {"agg": ("both", "avg", "sim", "none"), "sim": ("l2", "cos"), "pca_sign": ("as_returned", "canonical"),
            "g": ("latest", "keep"), "init": ("shared", "per_client")}
_SWITCHES = ("merge_start", "merge_forward")


def parse_fedem(args: list[str], spec: str) -> "FedEM":
    def err(msg: str) -> ValueError:
        return ValueError(f"optimization {spec!r}: {msg}; {FEDEM_USAGE}")

    kw: dict = {}
    for part in args:
        if "=" not in part:
            raise err(f"expected key=value, got {part!r}")
        key, value = (x.strip() for x in part.split("=", 1))
        if key in kw:
            raise err(f"{key} given twice")
        if key in _CHOICES:
            if value not in _CHOICES[key]:
                raise err(f"{key} must be one of {'|'.join(_CHOICES[key])}, got {value!r}")
            kw[key] = value
        elif key in _SWITCHES:
            if value not in ("on", "off"):
                raise err(f"{key} must be on or off, got {value!r}")
            kw[key] = value == "on"
        elif key == "rho":
            if value == "adapter":
                kw[key] = None
            else:
                try:
                    r = float(value)
                except ValueError:
                    raise err(f"rho must be 'adapter' or a number in [0, 1], got {value!r}") from None
                if not 0 <= r <= 1:
                    raise err(f"rho must be in [0, 1], got {value}")
                kw[key] = r
        elif key in ("alpha", "clip", "agg_ratio", "lr_adapter"):
            try:
                v = float(value)
            except ValueError:
                raise err(f"{key} must be a number, got {value!r}") from None
            ok = {"alpha": 0 <= v < float("inf"), "clip": 0 <= v < 1, "agg_ratio": 0 < v <= 1,
                  "lr_adapter": 0 < v < float("inf")}[key]
            if not ok:
                rng = {"alpha": ">= 0", "clip": "in [0, 1)", "agg_ratio": "in (0, 1]", "lr_adapter": "> 0"}[key]
                raise err(f"{key} must be {rng}, got {value}")
            kw[key] = v
        else:
            raise err(f"unknown key {key!r}")
    return FedEM(spec, FedEMSettings(**kw))


class FedEM(Optimization):
    name = "fedem"
    #: clients keep whole personal models; the round is rf2.personalised, not the global-model round
    personalised = True

    def __init__(self, spec: str | None = None, settings: FedEMSettings | None = None):
        super().__init__(spec)
        self.settings = settings or FedEMSettings()

    def describe(self, tier_names=("low", "mid", "high")) -> str:
        s = self.settings
        if s.agg == "none":
            return "FedEM's FCF, local only (no aggregation)"
        rho = "adapter" if s.rho is None else f"fixed rho={s.rho:g}"
        return f"FedEM personalised merging (agg={s.agg}, alpha={s.alpha:g}, {rho}, {s.agg_ratio:g} of clients aggregated)"
