"""Ranking evaluation shows progress over its users (it can take a minute after training), and
stays silent when progress is off."""
from __future__ import annotations

from rf2.config import RunConfig
from rf2.simulation import Simulation


def test_ranking_progress_bar_only_when_asked(capsys):
    cfg = RunConfig(dataset="synthetic", dataset_options={"n_users": 60, "n_items": 40, "events_per_user": 10},
                    clients_per_round=20, max_rounds=1, ranking_k=5)
    Simulation(cfg, progress=True).run()
    assert "ranking 40 items" in capsys.readouterr().err
    Simulation(cfg, progress=False).run()
    assert "ranking" not in capsys.readouterr().err
