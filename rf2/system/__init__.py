"""The system model: how long each client takes, and how many bytes it sends (RF² §4.3).

Each tier has a :class:`DeviceProfile`: a per-sample training time drawn from a Gaussian
(RF² §4.3 models device performance "as a Gaussian distribution using real-world measurements",
citing Yang et al., WWW 2021, ref. [23]) and an upload bandwidth. For every participant of a round:

* ``compute_s = n_samples * passes * t * compute_fraction`` (passes = local steps x local epochs run) with ``t ~ N(mean, std)`` drawn
  from the client's own RNG (truncated below at 10% of the mean), and ``compute_fraction`` the share
  of the full model's work its sub-model does (1 for the full model; Channel trains less);
* ``upload_s = bits / (upload_mbps * 1e6)``, with ``bits`` from the optimisation's encoding;
* ``total_s = compute_s + upload_s``; the round's wall time is the slowest participant's total.

Default profiles (preset ``flash``; override any field with ``system_options``, e.g.
``{low = {upload_mbps = 2.0}}``, or pick rf2 0.1's placeholders with ``{preset = "rf2-0.1"}``,
which may be combined with per-tier overrides).

**Derivation of ``flash``** from the FLASH measurements (Yang et al., *Characterizing Impacts of
Heterogeneity in Federated Learning upon Large-Scale Smartphone Data*, WWW 2021; RF² ref [23]).
Training time per batch on a low / mid / high-end phone, and each tier's slowdown relative to
the high-end phone:

=====================  ======================  ============================
workload               ms per batch (l/m/h)    slowdown low / mid / high
=====================  ======================  ============================
FEMNIST CNN            1642 / 588 / 179        9.17 / 3.28 / 1
CelebA CNN             5392 / 1355 / 561       9.61 / 2.42 / 1
Reddit LSTM (b. 10)    2596 / 916 / 528        4.92 / 1.73 / 1
Shakespeare (b. 100)   28621 / 13579 / 10681   2.68 / 1.27 / 1
mean ± sd (n = 4)                              6.60 ± 3.36 / 2.18 ± 0.88 / 1
=====================  ======================  ============================

rf2's models are far smaller than these, so the absolute scale is a choice: the high tier keeps
rf2's 2.0 ms per sample, and each tier's mean and standard deviation are the slowdown's mean and
spread across the four workloads times 2.0 ms (low 13.2 ± 6.7, mid 4.35 ± 1.75). The high tier is
the reference, so its spread across workloads is zero by construction; it gets the mid tier's
relative spread (sd / mean = 0.40), 2.0 ± 0.8. The standard deviation is used as the tier's
per-round device variation (a documented choice: FLASH reports no per-tier variance in this form).

Upload: FLASH's per-user upload speeds span about 430-6,600 kbit/s (median about 3,300); low /
mid / high get the low end, the median and the high end: 0.43 / 3.3 / 6.6 Mbit/s.

=======  ====================  ===========  ==========================================================
tier     ms per sample (μ±σ)   upload Mbps  source
=======  ====================  ===========  ==========================================================
low      13.2 ± 6.7            0.43         FLASH slowdown 6.6 ± 3.4 x high; upload low end
mid      4.35 ± 1.75           3.3          FLASH slowdown 2.2 ± 0.9 x high; upload median
high     2.0 ± 0.8             6.6          reference (rf2's scale); upload high end
=======  ====================  ===========  ==========================================================

Preset ``rf2-0.1`` (rf2 0.1's placeholders, kept for old results): low/mid/high 8 ± 2, 4 ± 1,
2 ± 0.5 ms per sample and 1 / 10 / 100 Mbit/s (4x compute and 100x bandwidth gaps, within the
2-6x and two orders of magnitude RF² §2.2.3 cites).

Other tier counts interpolate geometrically between the preset's low and high profiles.
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


#: Named profile sets: ``flash`` (default; derived from FLASH, see the module docstring) and
#: ``rf2-0.1`` (rf2 0.1's placeholders). Select with ``system_options = {preset = "rf2-0.1"}``.
PRESETS: dict[str, dict[str, DeviceProfile]] = {
    "flash": {
        "low": DeviceProfile(13.2, 6.7, 0.43),
        "mid": DeviceProfile(4.35, 1.75, 3.3),
        "high": DeviceProfile(2.0, 0.8, 6.6),
    },
    "rf2-0.1": {
        "low": DeviceProfile(8.0, 2.0, 1.0),
        "mid": DeviceProfile(4.0, 1.0, 10.0),
        "high": DeviceProfile(2.0, 0.5, 100.0),
    },
}
DEFAULT_PRESET = "flash"
DEFAULT_PROFILES = PRESETS[DEFAULT_PRESET]


def default_profiles(tier_names: Sequence[str], preset: str = DEFAULT_PRESET) -> list[DeviceProfile]:
    """The preset's profiles for low/mid/high (or low/high); other tier counts interpolate
    geometrically from its lowest (low) to its highest (high) profile."""
    if preset not in PRESETS:
        raise ValueError(f"system_options: preset must be one of {sorted(PRESETS)}, got {preset!r}")
    table = PRESETS[preset]
    if tuple(tier_names) in (("low", "mid", "high"), ("low", "high")):
        return [table[n] for n in tier_names]
    T = len(tier_names)
    lo, hi = table["low"], table["high"]
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
        """``overrides``: ``{"preset": NAME}`` (a key of :data:`PRESETS`) and/or per-tier tables of
        :class:`DeviceProfile` fields, applied on top of the preset."""
        self.tier_names = tuple(tier_names)
        overrides = dict(overrides or {})
        self.preset = overrides.pop("preset", DEFAULT_PRESET)
        if not isinstance(self.preset, str) or self.preset not in PRESETS:
            raise ValueError(f"system_options: preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        profiles = default_profiles(self.tier_names, self.preset)
        for name, change in overrides.items():
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

    def costs(self, contexts: Sequence, bits: np.ndarray, local_steps: "int | np.ndarray",
              compute_fraction: np.ndarray | None = None) -> ClientCosts:
        """``local_steps``: times each client's samples went through a step (local steps x local
        epochs), one number for all or one per client (fewer after an early stop)."""
        n = len(contexts)
        frac = np.ones(n) if compute_fraction is None else np.asarray(compute_fraction, dtype=float)
        passes = np.broadcast_to(np.asarray(local_steps, dtype=float), (n,))
        compute = np.empty(n)
        upload = np.empty(n)
        for i, ctx in enumerate(contexts):
            prof = self.profiles[ctx.tier]
            t = numpy_rng(ctx.seed, "system").normal(prof.ms_per_sample, prof.ms_per_sample_std)
            t = max(t, 0.1 * prof.ms_per_sample)
            compute[i] = ctx.num_samples * passes[i] * t * frac[i] / 1000.0
            upload[i] = float(bits[i]) / (prof.upload_mbps * 1e6)
        return ClientCosts(compute, upload, np.asarray(bits, dtype=float))
