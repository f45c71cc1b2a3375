"""Settings that would exhaust time or memory are refused up front: bounded epochs and local
steps, a lazily built round schedule (its length computed, not materialised), and a memory
estimate checked before training."""
from __future__ import annotations

import pytest

import rf2.simulation as simulation
from rf2.config import RunConfig
from rf2.selection import NoRepeatSelector
from rf2.simulation import Simulation

SYN = {"dataset": "synthetic", "dataset_options": {"n_users": 100, "n_items": 50, "events_per_user": 10}}


@pytest.mark.parametrize("name", ["epochs", "local_steps"])
def test_epochs_and_local_steps_are_bounded(name):
    with pytest.raises(ValueError, match=rf"{name} must be an integer in \[1, 10000\]"):
        RunConfig(**{name: 10**9})
    RunConfig(**{name: 10**4})


def test_the_schedule_is_lazy_and_its_length_arithmetic(monkeypatch):
    calls = []
    epoch = NoRepeatSelector.epoch
    monkeypatch.setattr(NoRepeatSelector, "epoch", lambda self, e: calls.append(e) or epoch(self, e))
    sim = Simulation(RunConfig(**SYN, clients_per_round=30, epochs=10**4, max_rounds=1), progress=False)
    plan = sim.schedule()
    assert len(plan) == 1 and calls == []
    assert [e for e, _ in plan] == [0] and calls == [0]
    full = Simulation(RunConfig(**SYN, clients_per_round=30, epochs=3), progress=False).schedule()
    assert len(full) == 12 == len(list(full))  # 100 clients, K=30: 4 rounds per epoch
    assert [e for e, _ in full] == [0] * 4 + [1] * 4 + [2] * 4
    assert (full[5][1] == list(full)[5][1]).all() and len(full[:3]) == 3


def test_a_run_that_cannot_fit_in_memory_is_refused_before_training(monkeypatch):
    monkeypatch.setattr(simulation, "available_memory_bytes", lambda: 1_000_000)
    sim = Simulation(RunConfig(**SYN, clients_per_round=30, optimization="quant:8:8:8"), progress=False)
    with pytest.raises(ValueError, match=r"clients_per_round=30.*MB.*available"):
        sim.run()
