"""The ``device`` setting (issue 15): names are checked, an unavailable device is refused in one
line, and a run keeps every tensor on its device.

No GPU here, so the last is checked with torch's default device set to ``meta`` while the run's
device is ``cpu``: a tensor created anywhere in the run without the run's device (a factory call
outside :func:`rf2.simulation.on_device`, a ``from_numpy``, a hard-coded default) is then a
``meta`` tensor, and the first operation mixing it with the run's CPU tensors, or reading its
values, fails the run. The CUDA/MPS paths themselves are untested (README, Devices)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rf2.config import RunConfig
from rf2.simulation import Simulation

SMALL = dict(dataset="synthetic", dataset_options={"n_users": 120, "n_items": 40, "events_per_user": 12, "seed": 2},
             clients_per_round=16, max_rounds=3)
LOO = dict(dataset="synthetic", dataset_options={"n_users": 60, "n_items": 400, "events_per_user": 15, "seed": 2,
                                                 "split": "leave-one-out", "user_id": True, "min_interactions": 10},
           clients_per_round=16, max_rounds=3, train_negatives=2)


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu", "", "cpu:-1"])
def test_device_names_are_checked(bad):
    with pytest.raises(ValueError, match=r"^config: device must be one of cpu, cuda, cuda:N, mps; got "):
        RunConfig(device=bad)


def test_an_unavailable_device_is_refused_when_the_run_starts():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    cfg = RunConfig(**SMALL, device="cuda")  # a valid name: a sweep may be written here and run on a GPU node
    with pytest.raises(ValueError, match=r"^device 'cuda': this torch \(.*\) sees no CUDA GPU; use device = \"cpu\""):
        Simulation(cfg, progress=False)


def test_the_device_is_recorded_but_not_part_of_the_run_id():
    from rf2.sweep import run_id

    cfg = RunConfig(**SMALL)
    assert cfg.device == "cpu" and RunConfig.from_dict(cfg.replace(device="cuda:1").to_dict()).device == "cuda:1"
    assert run_id(cfg.replace(device="cuda:1")) == run_id(cfg)


@pytest.fixture
def meta_default():
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


RUNS = {
    "dlrm none": dict(SMALL),
    "dlrm quant": dict(SMALL, optimization="quant:1:2:4"),
    "dlrm prune, reference engine": dict(SMALL, optimization="prune:1:2:4", engine="reference"),
    "din quants": dict(SMALL, model="din", optimization="quants:1:2:4"),
    "dlrm channel, adam, minibatches": dict(SMALL, optimization="channel:1:2:4", client_optimizer="adam",
                                             client_lr=0.01, local_epochs=2, local_batch_size=8),
    "dlrm exclude lo": dict(SMALL, optimization="exclude-lo"),
    "ncf, ranking": dict(LOO, model="ncf", ranking_k=5, sampled_k=5),
    "fedem": dict(LOO, model="fcf", model_options={"embedding_dim": 4, "adapter": [8, 4, 1]}, optimization="fedem", local_epochs=2, local_batch_size=8, client_optimizer="adam",
                  client_lr=0.01, sampled_k=5),
    "hetefedrec": dict(LOO, model="hetencf", model_options={"sizes": [4, 8, 16]}, optimization="hetefedrec:4,8,16",
                       ranking_k=5),
    "standalone": dict(LOO, max_rounds=0, model="ncf", optimization="standalone",
                       ranking_k=5),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_every_tensor_of_a_run_is_on_its_device(name, meta_default):
    settings = RUNS[name]
    with torch.device("cpu"):  # the reference run, all on the CPU
        want = Simulation(RunConfig(**settings), progress=False).run()
    got = Simulation(RunConfig(**settings, device="cpu"), progress=False).run()  # the default device is meta
    assert got.rounds["train_loss"].tolist() == want.rounds["train_loss"].tolist()
    assert got.metrics.frame.equals(want.metrics.frame)
    assert np.isfinite(got.metrics.frame["value"]).sum() >= 4  # it did evaluate
    assert torch.empty(1).device.type == "meta"  # the default device was meta all along


def test_rounds_and_evaluations_called_one_by_one_stay_on_the_device(meta_default):
    """Benchmarks and notebooks call train_round / evaluate / predict directly, outside run()."""
    sim = Simulation(RunConfig(**SMALL), progress=False)
    for i, (epoch, chosen) in enumerate(list(sim.schedule())[:2]):
        assert np.isfinite(sim.train_round(i, epoch, chosen)["train_loss"])
    assert np.isfinite(sim.evaluate().overall["auc"])
    assert np.isfinite(sim.predict(sim.dataset.test_index[:10])).all()
    assert all(p.device.type == "cpu" for p in sim.model.parameters())
