"""Where a run's tensors live (``RunConfig.device``, issue 15).

A :class:`rf2.simulation.Simulation` puts its model on the device and runs every step of a round
(client training, encoding, aggregation, the server step) and the evaluation on the device
(:func:`device_scope`), so each tensor the engines create without naming a device is created
there; inputs built from numpy arrays are created with ``torch.as_tensor`` (not ``from_numpy``,
which is always on the CPU) and results go back to numpy through :func:`to_numpy`.

Random numbers are drawn on the CPU from each client's own ``torch.Generator`` and then moved:
the same seed gives the same draws on every device (a CUDA generator would give other streams).
FedEM's compiled client loop (numba) runs on the CPU only; on another device FedEM uses its tensor
path.

Only ``cpu`` is tested here (no GPU on the machines rf2 is developed on): the test suite runs a
simulation with torch's default device set to ``meta``, so any tensor created outside the run's
device fails the run (tests/test_device.py). The CUDA and MPS paths are untested until a GPU check
is done.
"""
from __future__ import annotations

import numpy as np
import torch

#: device types a run accepts (``torch.device(...).type``)
DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device_name(name: str) -> torch.device:
    """``name`` as a ``torch.device`` of an accepted type, or a one-line ValueError that names the
    problem and the choices. Availability is checked when a run starts (:func:`resolve_device`)."""
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"config: device must be one of cpu, cuda, cuda:N, mps; got {name!r}") from None
    if dev.type not in DEVICE_TYPES:
        raise ValueError(f"config: device must be one of cpu, cuda, cuda:N, mps; got {name!r}")
    return dev


def device_scope(device: torch.device):
    """``torch.device(device)`` as a context (factory calls without a device create on it), or
    nothing when ``device`` is already torch's default device, the usual CPU case: the context is a
    ``TorchFunctionMode`` that sees every torch call, and costs ~5 us per call, which made the
    per-client paths (thousands of small calls per round) up to 2x slower."""
    from contextlib import nullcontext

    return nullcontext() if torch.get_default_device() == device else torch.device(device)


def resolve_device(name: str) -> torch.device:
    """The run's device, after checking that this machine's torch can use it."""
    dev = check_device_name(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: this torch ({torch.__version__}) sees no CUDA GPU; use device = \"cpu\" "
                             "or install a CUDA build of torch on a machine with a GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r}: MPS is not available on this machine; use device = \"cpu\"")
    return dev


def cpu_draw(fn, *args, generator: torch.Generator, device=None, **kwargs) -> torch.Tensor:
    """``fn(*args, generator=generator, **kwargs)`` (``torch.rand``, ``randn``, ...) drawn on the
    CPU, where rf2's per-client generators live, then moved to ``device`` (default: the current
    default device, i.e. the run's inside a run): the same stream on every device."""
    out = fn(*args, generator=generator, device="cpu", **kwargs)
    return out.to(device if device is not None else torch.get_default_device())


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor's values as a numpy array, from any device (no copy on the CPU)."""
    return t.detach().cpu().numpy()
