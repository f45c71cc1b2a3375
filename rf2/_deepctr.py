"""Offline-safe access to deepctr-torch.

deepctr-torch 0.3.0 runs ``deepctr_torch.utils.check_version`` when the package is imported: it
starts a thread that asks pypi.python.org for the latest release (and it imports ``requests``,
which it does not declare). rf2 must never reach the network except for an explicit,
checksum-verified dataset download, so every rf2 module imports deepctr-torch through this
module, which registers an inert ``deepctr_torch.utils`` before the package's ``__init__`` runs.

Use::

    from rf2._deepctr import deepctr_torch, inputs, layers
"""
from __future__ import annotations

import sys
import types


def _install_inert_version_check() -> None:
    if "deepctr_torch" in sys.modules:
        # Already imported: by rf2 (fine) or by user code that imported it first (its version
        # check already ran; nothing rf2 can undo).
        return
    stub = types.ModuleType("deepctr_torch.utils")
    stub.__doc__ = "rf2 stand-in: deepctr-torch's network version check is disabled."

    def check_version(version: str) -> None:  # noqa: ARG001 - same signature as the original
        return None

    stub.check_version = check_version
    sys.modules["deepctr_torch.utils"] = stub


_install_inert_version_check()

import deepctr_torch  # noqa: E402
from deepctr_torch import inputs, layers  # noqa: E402

__all__ = ["deepctr_torch", "inputs", "layers"]
