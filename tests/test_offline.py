"""rf2 never reaches the network on its own: deepctr-torch's import-time version check is disabled."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_import_and_train_without_network_or_threads():
    code = textwrap.dedent(
        """
        import socket, sys, threading
        attempts = []
        real_connect = socket.socket.connect
        def connect(self, addr):
            attempts.append(addr)
            raise OSError("network disabled in this test")
        socket.socket.connect = connect
        socket.create_connection = lambda *a, **k: attempts.append(a) or (_ for _ in ()).throw(OSError("off"))

        from rf2.config import RunConfig
        from rf2.simulation import Simulation
        import deepctr_torch
        cfg = RunConfig(dataset="synthetic", dataset_options={"n_users": 60, "n_items": 40}, clients_per_round=20)
        Simulation(cfg, progress=False).run()
        others = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
        print("ATTEMPTS", attempts)
        print("THREADS", others)
        print("REQUESTS", "requests" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ATTEMPTS []" in out.stdout
    assert "THREADS []" in out.stdout
    assert "REQUESTS False" in out.stdout
