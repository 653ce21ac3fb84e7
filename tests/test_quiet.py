"""The console without -v: cherrybench's own bars and messages, no library chatter
(their loggers, Future/User warnings, weight-loading bars, MLflow run links, the
Trainer's per-step log dicts); with -v every library keeps its defaults.
No model is loaded: `score` runs the mtld metric."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings

import pytest

from cherrybench import quiet
from cherrybench.cli import main

ROWS = [
    {"instruction": "Give a synonym for happy.", "input": "", "output": "Joyful, glad, cheerful and content."},
    {"instruction": "Explain rain briefly.", "input": "",
     "output": "Rain forms when water vapour condenses into droplets that grow heavy enough to fall."},
]


@pytest.fixture
def restore_quiet_state(monkeypatch):
    """quiet_libraries changes process-wide state: start from the libraries' defaults and
    restore afterwards (pytest restores warnings filters)."""
    for name in quiet.QUIET_ENV:
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)  # unset now, and unset again at teardown
    levels = {name: logging.getLogger(name).level for name in quiet.NOISY_LOGGERS}
    for name in quiet.NOISY_LOGGERS:  # library defaults, whatever an earlier CLI run in this process set
        logging.getLogger(name).setLevel(logging.NOTSET)
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _score(tmp_path, *flags: str) -> int:
    data = tmp_path / "pool.json"
    data.write_text(json.dumps(ROWS))
    return main(["score", "--data", str(data), "--metrics", "mtld", "--out", str(tmp_path / "s.csv"), *flags])


def _chatter() -> None:
    """What the libraries say during a run, as they say it, and a warning of cherrybench's own."""
    logging.getLogger("mlflow.store.db.utils").warning("Creating initial MLflow database tables...")
    logging.getLogger("urllib3.connectionpool").warning("Retrying (Retry(total=4))")
    warnings.warn_explicit("`torch_dtype` is deprecated", FutureWarning, "modeling_utils.py", 1,
                           module="transformers.modeling_utils")
    warnings.warn_explicit("TypedStorage is deprecated", UserWarning, "storage.py", 1, module="torch.storage")
    warnings.warn_explicit("cherrybench's own UserWarning", UserWarning, "stats.py", 1, module="cherrybench.stats")
    logging.getLogger("cherrybench.runners.compare").warning("cherrybench's own warning")


def _run(tmp_path, caplog, *flags: str) -> str:
    """The log records and warnings of a score run followed by library chatter, as text."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning a plain `python` run would print, each time
        assert _score(tmp_path, *flags) == 0
        _chatter()
    said = [r.getMessage() for r in caplog.records] + [str(w.message) for w in caught]
    return "\n".join(said)


def test_quiet_by_default(tmp_path, caplog, capsys, restore_quiet_state):
    said = _run(tmp_path, caplog)
    assert "cherrybench's own warning" in said and "cherrybench's own UserWarning" in said
    for noise in ("MLflow database", "Retrying", "torch_dtype", "TypedStorage"):
        assert noise not in said, said
    assert "score mtld" in capsys.readouterr().err  # the stage's bar is still there
    assert os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and os.environ["TRANSFORMERS_VERBOSITY"] == "error"


def test_verbose_keeps_library_logs(tmp_path, caplog, restore_quiet_state):
    said = _run(tmp_path, caplog, "-v")
    for noise in ("Retrying", "torch_dtype", "TypedStorage", "cherrybench's own warning"):
        assert noise in said, said
    assert "TRANSFORMERS_VERBOSITY" not in os.environ


def test_a_user_setting_wins(tmp_path, monkeypatch, restore_quiet_state):
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    assert _score(tmp_path, "--no-progress") == 0
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "info"


class _Trainer:
    def __init__(self, callbacks):
        self.callbacks = list(callbacks)

    def remove_callback(self, cls):
        self.callbacks = [c for c in self.callbacks if not (c is cls or isinstance(c, cls))]

    def add_callback(self, callback):
        self.callbacks.append(callback)


def test_trainer_prints_no_step_dicts(monkeypatch):
    """The Trainer's console callbacks (which print every log dict) give way to one bar;
    with transformers at its default verbosity (-v) they stay."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils import logging as hf_logging

    saved = hf_logging.get_verbosity()
    try:
        hf_logging.set_verbosity_error()
        trainer = _Trainer([ProgressCallback()])
        quiet.quiet_trainer(trainer, progress=True, desc="fine-tune 8 records, seed 0")
        assert [type(c).__name__ for c in trainer.callbacks] == ["StepBar"]
        trainer = _Trainer([PrinterCallback()])
        quiet.quiet_trainer(trainer, progress=False, desc="x")
        assert trainer.callbacks == []
        hf_logging.set_verbosity_warning()
        trainer = _Trainer([ProgressCallback()])
        quiet.quiet_trainer(trainer, progress=True, desc="x")
        assert [type(c) for c in trainer.callbacks] == [ProgressCallback]
    finally:
        hf_logging.set_verbosity(saved)


def test_fresh_process_stderr_is_clean(tmp_path):
    """A real `cherrybench score` process: stderr holds the bar and nothing else."""
    data = tmp_path / "pool.json"
    data.write_text(json.dumps(ROWS))
    out = tmp_path / "s.csv"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    run = subprocess.run([sys.executable, "-m", "cherrybench", "score", "--data", str(data), "--metrics", "mtld",
                          "--out", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and all(line.startswith("score mtld") for line in lines), run.stderr
    assert run.stdout.startswith("wrote 2 rows")
