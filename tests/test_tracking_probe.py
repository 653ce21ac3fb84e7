"""The fail-fast tracking probe against a real `mlflow server`: a server that stalls for a
few seconds (a loaded machine) is tried again instead of being called unreachable, and the
test server itself does not outlive a killed pytest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from conftest import start_mlflow_server, stop_mlflow_server

from cherrybench.runners.tracking import check_tracking

pytestmark = pytest.mark.slow


def test_a_stalled_server_is_tried_again_not_called_unreachable(tmp_path):
    proc, url = start_mlflow_server(tmp_path)
    try:
        os.killpg(proc.pid, signal.SIGSTOP)  # the whole server stops answering, as under a peak load
        with pytest.raises(ConnectionError, match="unreachable"):
            check_tracking(url, timeouts_s=(2,))  # one short try: the stall is real
        resume = threading.Timer(4, os.killpg, (proc.pid, signal.SIGCONT))
        resume.start()
        started = time.time()
        client = check_tracking(url, timeouts_s=(2, 2, 30))
        assert time.time() - started >= 3  # it got through only after the server came back
        assert client.search_experiments(max_results=1) is not None
        resume.join()
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
        stop_mlflow_server(proc)


def test_a_server_that_stays_down_is_reported_with_the_number_of_tries(unused_port):
    started = time.time()
    with pytest.raises(ConnectionError, match="unreachable after 3 tries"):
        check_tracking(f"http://127.0.0.1:{unused_port}")
    assert time.time() - started < 30  # a refused connection costs the pauses, not the timeouts


SPAWN = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from conftest import start_mlflow_server
proc, url = start_mlflow_server(Path(sys.argv[2]))
print(proc.pid, flush=True)
time.sleep(600)
"""


def test_the_test_server_stops_when_its_pytest_is_killed(tmp_path):
    tests_dir = os.path.dirname(__file__)
    parent = subprocess.Popen([sys.executable, "-c", SPAWN, tests_dir, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    group = int(parent.stdout.readline())
    members = [p for p in psutil.process_iter(["pid"]) if _group_of(p.pid) == group]
    assert any("mlflow" in " ".join(_cmdline(p)) for p in members)  # the server is up, in that group
    parent.kill()  # SIGKILL: no teardown runs
    parent.wait()
    deadline = time.time() + 60
    while time.time() < deadline and any(_group_of(p.pid) == group for p in psutil.process_iter(["pid"])):
        time.sleep(0.5)
    assert not [p.pid for p in psutil.process_iter(["pid"]) if _group_of(p.pid) == group]


def _group_of(pid: int):
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _cmdline(p) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []
