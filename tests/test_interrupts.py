"""An interrupted command: SIGTERM acts like Ctrl-C, the CLI says how to resume and
exits 130, and the MLflow runs it leaves end as KILLED (not FAILED, not RUNNING)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from mlflow.tracking import MlflowClient

from cherrybench.cli import interrupt_on_sigterm, main
from cherrybench.runners import tracking


def test_sigterm_becomes_keyboard_interrupt_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with interrupt_on_sigterm():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # never reached in full: the handler raises at once
    assert signal.getsignal(signal.SIGTERM) is before


def test_cli_interrupted_exits_130_and_says_how_to_resume(tmp_path, capsys):
    plugin = tmp_path / "stop.py"  # plugin code runs inside main(): a stop arriving mid-command
    plugin.write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(5)\n")
    assert main(["--plugin", str(plugin), "metrics"]) == 130
    assert "interrupted; finished work is kept: run the same command again to resume" in capsys.readouterr().err


@pytest.mark.slow  # an SQLite tracking store
def test_interrupted_runs_end_killed_and_failures_failed(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.create_experiment("stops", artifact_location=(tmp_path / "art").as_uri())
    with pytest.raises(KeyboardInterrupt):
        with tracking.parent_run(exp, "p", "cmd") as parent:
            with tracking.trial_run(exp, parent.info.run_id, "done", "k0"):
                pass
            with tracking.trial_run(exp, parent.info.run_id, "cut", "k1"):
                raise KeyboardInterrupt
    with pytest.raises(ValueError):
        with tracking.parent_run(exp, "p2", "cmd") as other:
            with tracking.trial_run(exp, other.info.run_id, "crash", "k2"):
                raise ValueError("a bug")
    status = {r.info.run_name: r.info.status for r in client.search_runs([exp])}
    assert status == {"p": "KILLED", "done": "FINISHED", "cut": "KILLED", "p2": "FAILED", "crash": "FAILED"}
    assert mlflow.active_run() is None


@pytest.mark.slow  # an SQLite tracking store and a second Python process
def test_runs_of_a_process_killed_outright_are_closed_by_the_next_run(tmp_path):
    """SIGKILL leaves no chance to end a run: the next compare on this machine ends the
    runs whose process is gone as KILLED, and leaves a live process's runs running."""
    import subprocess
    import sys

    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("killed", artifact_location=(tmp_path / "art").as_uri())
    opener = ("import sys, time, mlflow\n"
              "from cherrybench.runners import tracking\n"
              f"mlflow.set_tracking_uri({uri!r})\n"
              f"with tracking.parent_run({exp!r}, sys.argv[1], 'cmd') as p:\n"
              "    with tracking.trial_run(%r, p.info.run_id, sys.argv[1] + '-trial', 'k'):\n" % exp +
              "        print('open', flush=True)\n"
              "        time.sleep(600)\n")
    procs = {}
    for name in ("dead", "alive"):
        procs[name] = subprocess.Popen([sys.executable, "-c", opener, name], stdout=subprocess.PIPE, text=True)
        assert procs[name].stdout.readline().strip() == "open"
    procs["dead"].kill()
    procs["dead"].wait()
    try:
        status = lambda: {r.info.run_name: r.info.status for r in client.search_runs([exp])}  # noqa: E731
        assert set(status().values()) == {"RUNNING"}  # SIGKILL: nothing ended them
        mlflow.set_tracking_uri(uri)
        assert tracking.close_orphans(client, exp) == 2
        assert status() == {"dead": "KILLED", "dead-trial": "KILLED", "alive": "RUNNING", "alive-trial": "RUNNING"}
        assert tracking.close_orphans(client, exp) == 0  # nothing left to close
    finally:
        procs["alive"].kill()
        procs["alive"].wait()
