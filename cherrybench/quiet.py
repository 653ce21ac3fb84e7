"""A quiet console by default: cherrybench's own progress bars (one per stage),
warnings and results; the libraries' chatter (weight-loading and shard-writing
bars, Trainer step dicts, MLflow's run links and INFO lines, their Future/User
warnings) silenced. `-v` leaves every library at its own defaults.

Switches are set through the libraries' environment variables where they read
them at import, so nothing heavy is imported here (transformers alone takes
seconds); a library already imported is switched directly."""

from __future__ import annotations

import logging
import os
import sys
import warnings

# read by the libraries at import (or at the call that prints); a value the user set wins
QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",  # transformers' own handler: load reports, advisory warnings
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' bars ("Loading weights", "Writing model shards") follow it
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # MLflow resets its loggers' level at import: "Creating initial MLflow database tables..."
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # "🏃 View run ... at: ..." per run (tracking servers)
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # a bar per downloaded artifact
}
NOISY_LOGGERS = ("mlflow", "alembic", "huey", "sqlalchemy", "urllib3", "httpx", "httpcore", "filelock", "fsspec",
                 "datasets", "huggingface_hub", "sentence_transformers", "accelerate", "peft", "torch", "matplotlib",
                 "PIL", "numexpr", "git")
# FutureWarning / UserWarning raised from inside these libraries (matched on the warning's module,
# so a warning attributed to cherrybench's own code still shows)
NOISY_WARNING_MODULES = ("transformers", "torch", "mlflow", "statsmodels", "sentence_transformers", "huggingface_hub",
                         "datasets", "accelerate", "peft", "pydantic", "sklearn", "alembic", "sqlalchemy", "pandas",
                         "pyarrow", "matplotlib")


def quiet_libraries() -> None:
    """Silence library chatter for the rest of the process (the CLI calls this unless -v)."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in NOISY_WARNING_MODULES:
        for category in (FutureWarning, UserWarning):
            warnings.filterwarnings("ignore", category=category, module=rf"{module}(\.|$)")
    if "transformers" in sys.modules:  # imported before (a plugin, a test): the env is read already
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # huggingface_hub's bars too
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def library_logs_wanted() -> bool:
    """True unless transformers is set to errors only (as the CLI does without -v):
    then the Trainer's per-step log dicts are not printed."""
    from transformers.utils import logging as hf_logging

    return hf_logging.get_verbosity() < logging.ERROR


def quiet_trainer(trainer, progress: bool, desc: str) -> None:
    """Replace the Trainer's console callbacks (ProgressCallback writes every log dict
    under its bar; PrinterCallback, used with disable_tqdm, prints them) by one bar,
    unless library logs are wanted (-v). The log history itself is kept either way."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if library_logs_wanted():
        return
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if progress:
        trainer.add_callback(step_bar(desc))


def step_bar(desc: str):
    """A TrainerCallback drawing one tqdm bar over the optimizer steps, the latest loss beside it."""
    from tqdm import tqdm
    from transformers import TrainerCallback

    class StepBar(TrainerCallback):
        def __init__(self):
            self.bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.bar = tqdm(total=state.max_steps, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True)

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.3g}", refresh=False)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return StepBar()
