"""Shared fixtures. Real data: ``RF2_DATA_DIR`` (CI points it at ../shared/data) or the recbole copy."""
from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path

import pytest

from rf2.data import load_dataset, make_synthetic


def grouplens_dir(name: str) -> Path | None:
    root = os.environ.get("RF2_DATA_DIR")
    if not root:
        return None
    p = Path(root) / name
    return p if p.is_dir() else None


@pytest.fixture(scope="session")
def ml100k_files() -> Path:
    p = grouplens_dir("ml-100k")
    if p is None:
        pytest.skip("needs the original GroupLens MovieLens-100K files: set RF2_DATA_DIR (CI: ../shared/data)")
    return p


@pytest.fixture(scope="session")
def ml100k():
    return load_dataset("ml-100k")


@pytest.fixture(scope="session")
def synth():
    return make_synthetic(n_users=300, n_items=200, events_per_user=20, history_maxlen=8, seed=3)


@pytest.fixture
def server():
    """A loopback HTTP server serving whatever bytes the test puts in ``payload``; yields
    ``(state, url)`` (downloads never leave the machine)."""
    state = {"payload": b""}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = state["payload"]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield state, f"http://127.0.0.1:{httpd.server_address[1]}/archive.zip"
    httpd.shutdown()



@pytest.fixture
def tiny_sweep():
    """``tiny_sweep(out)``: a 2-run sweep (none + exclude-lo, random tiers, 120 synthetic users, no
    noise floor) into ``out``, run in-process; for tests of the results directory."""
    from rf2.sweep import Sweep, SweepSpec

    base = {"dataset": "synthetic", "dataset_options": {"n_users": 120, "n_items": 50, "events_per_user": 10, "seed": 2},
            "clients_per_round": 30}

    def make(out):
        spec = SweepSpec(base=base, mappings=("random",), optimizations=("exclude-lo",), seeds=(0,), noise_floor=False)
        return Sweep(spec, out, progress=False, executor="inprocess")

    return make
