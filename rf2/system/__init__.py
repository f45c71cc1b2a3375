"""The system model: how long each client takes, and how many bytes it sends (RF² §4.3).

Each tier has a :class:`DeviceProfile`: a per-sample training time drawn from a Gaussian
(RF² §4.3 models device performance "as a Gaussian distribution using real-world measurements",
citing Yang et al., WWW 2021, ref. [23]) and an upload bandwidth. For every participant of a round:

* ``compute_s = n_samples * local_steps * t * compute_fraction`` with ``t ~ N(mean, std)`` drawn
  from the client's own RNG (truncated below at 10% of the mean), and ``compute_fraction`` the share
  of the full model's work its sub-model does (1 for the full model; Channel trains less);
* ``upload_s = bits / (upload_mbps * 1e6)``, with ``bits`` from the optimisation's encoding;
* ``total_s = compute_s + upload_s``; the round's wall time is the slowest participant's total.

Default profiles (override any field with ``system_options``, e.g.
``{low = {upload_mbps = 2.0}}``). The absolute numbers are placeholders at a plausible scale;
what matters for tier-aware optimisations is the *ratios*, which follow the sources RF² cites:

==============  ===================  ==========================  ==========================================
tier            ms per sample (μ±σ)  upload Mbps                 source of the ratio
==============  ===================  ==========================  ==========================================
low             8.0 ± 2.0            1                           2-6x slower training than high-end phones
mid             4.0 ± 1.0            10                          (Yang et al. 2021, RF² [23]); two orders of
high            2.0 ± 0.5            100                         magnitude in bandwidth (SpeedTest 2022, [40])
==============  ===================  ==========================  ==========================================

Low-end phones are 4x slower than high-end ones here (inside the 2-6x range), and their upload is
100x slower.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import numpy as np

from rf2.seeding import numpy_rng


@dataclass(frozen=True)
class DeviceProfile:
    ms_per_sample: float  # mean training time per sample and local step, milliseconds
    ms_per_sample_std: float
    upload_mbps: float

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or v < 0 or v != v:
                raise ValueError(f"device profile: {f.name} must be a number >= 0, got {v!r}")
        if self.ms_per_sample <= 0 or self.upload_mbps <= 0:
            raise ValueError("device profile: ms_per_sample and upload_mbps must be > 0")


DEFAULT_PROFILES = {
    "low": DeviceProfile(8.0, 2.0, 1.0),
    "mid": DeviceProfile(4.0, 1.0, 10.0),
    "high": DeviceProfile(2.0, 0.5, 100.0),
}


def default_profiles(tier_names: Sequence[str]) -> list[DeviceProfile]:
    """The table above for low/mid/high; other tier counts interpolate geometrically from the
    lowest (low) to the highest (high) profile."""
    if tuple(tier_names) in (("low", "mid", "high"), ("low", "high")):
        return [DEFAULT_PROFILES[n] for n in tier_names]
    T = len(tier_names)
    lo, hi = DEFAULT_PROFILES["low"], DEFAULT_PROFILES["high"]
    out = []
    for t in range(T):
        a = t / (T - 1)
        out.append(DeviceProfile(
            lo.ms_per_sample * (hi.ms_per_sample / lo.ms_per_sample) ** a,
            lo.ms_per_sample_std * (hi.ms_per_sample_std / lo.ms_per_sample_std) ** a,
            lo.upload_mbps * (hi.upload_mbps / lo.upload_mbps) ** a,
        ))
    return out


@dataclass
class ClientCosts:
    compute_s: np.ndarray
    upload_s: np.ndarray
    bits: np.ndarray

    @property
    def total_s(self) -> np.ndarray:
        return self.compute_s + self.upload_s


class SystemModel:
    def __init__(self, tier_names: Sequence[str], overrides: dict | None = None):
        self.tier_names = tuple(tier_names)
        profiles = default_profiles(self.tier_names)
        for name, change in (overrides or {}).items():
            if name not in self.tier_names:
                raise ValueError(f"system_options: unknown tier {name!r}; tiers are {list(self.tier_names)}")
            if not isinstance(change, dict):
                raise ValueError(f"system_options: {name} must be a table of profile fields, got {change!r}")
            known = {f.name for f in fields(DeviceProfile)}
            bad = sorted(set(change) - known)
            if bad:
                raise ValueError(f"system_options.{name}: unknown field(s) {bad}; fields are {sorted(known)}")
            i = self.tier_names.index(name)
            profiles[i] = replace(profiles[i], **change)
        self.profiles = profiles

    def costs(self, contexts: Sequence, bits: np.ndarray, local_steps: int,
              compute_fraction: np.ndarray | None = None) -> ClientCosts:
        n = len(contexts)
        frac = np.ones(n) if compute_fraction is None else np.asarray(compute_fraction, dtype=float)
        compute = np.empty(n)
        upload = np.empty(n)
        for i, ctx in enumerate(contexts):
            prof = self.profiles[ctx.tier]
            t = numpy_rng(ctx.seed, "system").normal(prof.ms_per_sample, prof.ms_per_sample_std)
            t = max(t, 0.1 * prof.ms_per_sample)
            compute[i] = ctx.num_samples * local_steps * t * frac[i] / 1000.0
            upload[i] = float(bits[i]) / (prof.upload_mbps * 1e6)
        return ClientCosts(compute, upload, np.asarray(bits, dtype=float))
