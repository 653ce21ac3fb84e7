"""Every setting is checked before any model is loaded, record scored or model
trained, and a user's mistake is one line (`cherrybench: error: ...`) with exit
status 2, never a traceback. A tripwire makes any scoring or training in these
tests fail loudly, so "fails early" is checked, not assumed."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cherrybench.cli import build_parser, main

ROWS = [{"instruction": f"Question number {i}?", "input": "", "output": f"This is answer number {i}, in full."}
        for i in range(20)]
README = Path(__file__).resolve().parents[1] / "README.md"


class WorkStarted(AssertionError):
    pass


TRIPWIRE = ("cherrybench.scoring.score", "cherrybench.scoring.score_metric", "cherrybench.runners.select.score",
            "cherrybench.finetune.finetune", "cherrybench.finetune.finetuned_model",
            "cherrybench.runners.trial_steps.finetune", "cherrybench.runners.trial_steps.finetuned_model",
            "cherrybench.runners.regress.run_subset", "cherrybench.context.Context.lm",
            "cherrybench.context.Context.tokenizer", "cherrybench.embedders.embed",
            "cherrybench.selectors.kcenter.embed", "cherrybench.selectors.deita.embed",
            "cherrybench.selectors.mods.embed", "cherrybench.selectors.superfiltering_d.embed")


@pytest.fixture
def tripwire(monkeypatch):
    """Scoring, model loading and fine-tuning raise: the checks must come first."""

    def boom(*args, **kwargs):
        raise WorkStarted("work started before the settings were checked")

    # every module imported before any patch: one first imported while `cherrybench.scoring.score`
    # is patched would bind the tripwire for good (`from cherrybench.scoring import score`)
    for module in ("cherrybench.runners.select", "cherrybench.runners.compare", "cherrybench.runners.regress",
                   "cherrybench.context", "cherrybench.embedders", "cherrybench.selectors.kcenter",
                   "cherrybench.selectors.deita", "cherrybench.selectors.mods", "cherrybench.selectors.superfiltering_d"):
        importlib.import_module(module)
    for target in TRIPWIRE:
        monkeypatch.setattr(target, boom, raising=False)


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "d20.json"
    path.write_text(json.dumps(ROWS))
    return path


@pytest.fixture
def tracking(tmp_path):
    return ["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("cherrybench: error: ") and "\n" not in err, err
    return err


# -- budgets ---------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "-1", "0", "abc", "1.5", ""])
def test_budget_parse_refuses_non_finite_negative_and_text(text):
    from cherrybench.selectors import Budget

    with pytest.raises(ValueError, match="--budget must be a positive count"):
        Budget.parse(text)


def test_budget_that_rounds_to_zero_records_is_refused(data, tmp_path, capsys, tripwire):
    out = tmp_path / "s.json"
    assert main(["select", "--data", str(data), "--selector", "random", "--budget", "0.01", "--out", str(out)]) == 2
    assert "--budget 0.01 of 20 records" in error_line(capsys) and not out.exists()


@pytest.mark.parametrize("budget, message", [
    ("0", "--budget must be a positive count"),
    ("0.01", "--budget 0.01 of 16 pool records rounds to 0 records"),
    ("inf", "--budget must be a positive count"),
    ("16", "--budget 16 keeps all 16 pool records"),
])
def test_compare_budget_fails_before_the_full_baseline_trains(budget, message, data, tracking, capsys, tripwire):
    assert main(["compare", "--data", str(data), "--eval-size", "4", "--budget", budget, *tracking]) == 2
    assert message in error_line(capsys)


# -- sizes against the data ---------------------------------------------------------------
def test_compare_default_eval_size_on_a_small_file_names_the_fix(tmp_path, tracking, capsys, tripwire):
    small = tmp_path / "d8.json"
    small.write_text(json.dumps(ROWS[:8]))
    assert main(["compare", "--data", str(small), *tracking]) == 2
    assert error_line(capsys).endswith(f"--data {small}: 8 records cannot hold --eval-size 20 held-out records "
                                       "plus a pool; lower --eval-size")


def test_compare_pool_size_beyond_the_records_left_is_refused(data, tracking, capsys, tripwire):
    assert main(["compare", "--data", str(data), "--eval-size", "4", "--pool-size", "30", *tracking]) == 2
    assert "leave 16 for the pool, not --pool-size 30" in error_line(capsys)


def test_compare_resolves_pool_size_and_seeds(data, tracking):
    from cherrybench.runners.compare import check_compare

    args = build_parser().parse_args(["compare", "--data", str(data), "--eval-size", "4", "--seeds", "3", *tracking])
    check_compare(args)
    assert args.pool_size == 16 and args.seed == [0, 1, 2]  # all records not held out; seeds 0..N-1
    args = build_parser().parse_args(["compare", "--data", str(data), "--eval-size", "4", "--seed", "5", *tracking])
    check_compare(args)
    assert args.seed == [5]


@pytest.mark.parametrize("extra, message", [
    (["--seeds", "2", "--full-seeds", "3"], "--full-seeds must lie in 1..2 (the number of seeds), got 3"),
    (["--seeds", "2", "--full-seeds", "0"], "--full-seeds must lie in 1..2"),
    (["--seeds", "2", "--full-seeds", "1"], "`full` is the pairwise baseline, needed at every seed"),
    (["--seeds", "2", "--full-seeds", "1", "--no-baselines", "--selectors", "ifd"], "`full` is not among the runs"),
])
def test_compare_full_seeds_is_checked(data, tracking, capsys, tripwire, extra, message):
    assert main(["compare", "--data", str(data), "--eval-size", "4", *extra, *tracking]) == 2
    assert message in error_line(capsys)


def test_compare_seed_and_seeds_together_is_an_error(data, tracking, capsys, tripwire):
    assert main(["compare", "--data", str(data), "--eval-size", "4", "--seed", "1", "--seeds", "2", *tracking]) == 2
    assert "--seed (repeatable) or --seeds N, not both" in error_line(capsys)


def test_regress_needs_indicators_plus_two_subsets_before_training(data, tmp_path, tracking, capsys, tripwire):
    argv = ["regress", "--data", str(data), "--eval", str(data), "--out", str(tmp_path / "rule.json"),
            "--indicators", "mtld,output_length", "--subsets", "2", "--subset-size", "5", *tracking]
    assert main(argv) == 2
    assert "--subsets 2: the fit needs at least indicators + 2 = 4 subsets" in error_line(capsys)


def test_regress_subsets_of_the_whole_pool_are_refused(data, tmp_path, tracking, capsys, tripwire):
    argv = ["regress", "--data", str(data), "--eval", str(data), "--out", str(tmp_path / "rule.json"),
            "--indicators", "mtld", "--subsets", "3", "--per-source", "5", "--subset-size", "5", *tracking]
    assert main(argv) == 2
    assert "--subset-size 5: the pool has 5 records" in error_line(capsys)


@pytest.mark.parametrize("flag, value", [("--max-length", "1"), ("--max-length", "-5"), ("--batch-tokens", "0")])
def test_lengths_that_leave_nothing_to_score_are_refused(flag, value, data, tmp_path, capsys, tripwire):
    argv = ["score", "--data", str(data), "--metrics", "ifd", "--out", str(tmp_path / "s.csv"), flag, value]
    assert main(argv) == 2
    assert f"argument {flag}: expected an integer >=" in error_line(capsys)


@pytest.mark.parametrize("flag, value", [("--epochs", "0"), ("--learning-rate", "-1e-5"), ("--learning-rate", "nan"),
                                         ("--train-batch-size", "0"), ("--gradient-accumulation", "0"),
                                         ("--lora-r", "0")])
def test_training_settings_that_cannot_train_are_refused(flag, value, data, tracking, capsys, tripwire):
    assert main(["compare", "--data", str(data), "--eval-size", "4", flag, value, *tracking]) == 2
    assert f"argument {flag}: expected" in error_line(capsys)


# -- --pool-size and the renamed regress flags ----------------------------------------------
def test_pool_size_samples_a_data_file_in_score(data, tmp_path, capsys):
    import pandas as pd

    def ids(seed: str) -> list[str]:
        out = tmp_path / f"s{seed}.csv"
        assert main(["score", "--data", str(data), "--metrics", "mtld", "--pool-size", "5", "--seed", seed,
                     "--out", str(out), "--no-progress"]) == 0
        return [str(i) for i in pd.read_csv(out)["id"]]

    first = ids("0")
    assert len(first) == 5 and first == sorted(first, key=int)  # a sample, kept in input order
    assert ids("0") == first and ids("1") != first  # seeded


def test_pool_size_above_the_file_is_an_error(data, tmp_path, capsys, tripwire):
    argv = ["select", "--data", str(data), "--selector", "random", "--budget", "2", "--pool-size", "21",
            "--out", str(tmp_path / "s.json")]
    assert main(argv) == 2
    assert f"--pool-size 21: --data {data} has only 20 records" in error_line(capsys)


@pytest.mark.parametrize("old, new", [("--pool-size", "--per-source"), ("--eval-size", "--eval-limit")])
def test_regress_renamed_flags_say_what_replaced_them(old, new, data, tmp_path, capsys, tripwire):
    argv = ["regress", "--data", str(data), "--eval", str(data), "--out", str(tmp_path / "r.json"), old, "5"]
    assert main(argv) == 2
    assert f"argument {old}: renamed: use {new}" in error_line(capsys)


def test_regress_eval_limit_samples_each_eval_file(tmp_path):
    from cherrybench.runners.regress import load_eval_records

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(ROWS[:10]))
    b.write_text(json.dumps(ROWS[10:]))
    records = load_eval_records([str(a), str(b)], 3, seed=0)
    texts = [r.turns[0].instruction for r in records]
    assert len(texts) == 6
    assert sum(t in {r["instruction"] for r in ROWS[:10]} for t in texts) == 3  # 3 of each file


# -- --param keys and values -------------------------------------------------------------
def test_unknown_param_key_is_an_error_with_did_you_mean(data, tmp_path, capsys, tripwire):
    argv = ["select", "--data", str(data), "--selector", "deita", "--param", "tua=0.8", "--budget", "2",
            "--out", str(tmp_path / "s.json")]
    assert main(argv) == 2
    assert error_line(capsys) == "cherrybench: error: --param tua: no metric or selector of this run takes it. " \
                                 "Did you mean tau?"


def test_param_key_of_a_plugin_outside_the_run_is_refused(data, tmp_path, capsys, tripwire):
    argv = ["score", "--data", str(data), "--metrics", "mtld", "--param", "tau=0.5", "--out", str(tmp_path / "s.csv")]
    assert main(argv) == 2
    assert "--param tau: no metric or selector of this run takes it; they take: threshold" in error_line(capsys)


def test_param_key_of_the_run_is_used(data, tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["select", "--data", str(data), "--selector", "random", "--param", "seed=3", "--budget", "2",
                 "--out", str(out)]) == 0
    report = json.loads((tmp_path / "s.report.json").read_text())
    assert report["params"] == {"seed": 3}
    assert main(["select", "--data", str(data), "--selector", "random", "--param", "seed=3.0", "--budget", "2",
                 "--out", str(tmp_path / "t.json")]) == 0  # 3.0 is the integer 3: the same selection
    again = json.loads((tmp_path / "t.report.json").read_text())
    assert type(again["params"]["seed"]) is int and again["ids"] == report["ids"]


def test_a_number_given_to_a_text_parameter_stays_the_text_typed(data, tmp_path, capsys, tripwire):
    """`--param column=5` names a column "5" (JSON reads the value as a number): refused for what it is."""
    argv = ["select", "--data", str(data), "--selector", "topk", "--param", "column=5", "--budget", "2",
            "--out", str(tmp_path / "s.json")]
    assert main(argv) == 2
    assert "needs score columns ['5']" in error_line(capsys)


@pytest.mark.parametrize("selector, params, message", [
    ("kcenter", ["metric=manhattan"], "selector 'kcenter': parameter metric must be one of 'euclidean', 'cosine'"),
    ("deita", ["tau=2"], "selector 'deita': parameter tau must be a number in (0, 1], got 2"),
    ("deita", ["tau=abc"], "selector 'deita': parameter tau must be a number in (0, 1], got 'abc'"),
    ("mods", ["seed_fraction=0"], "selector 'mods': parameter seed_fraction must be a number in (0, 1], got 0"),
    ("threshold", [], "selector 'threshold' needs minimum or maximum"),
    ("threshold", ["minimum=2", "maximum=1"], "minimum 2 is above maximum 1"),
    ("ifd", ["prompt=bogus"], "metric 'ifd': parameter prompt must be one of 'alpaca', 'plain', 'chat'"),
    ("superfiltering_d", ["candidate_factor=0.5"], "parameter candidate_factor must be a number in [1, inf]"),
    ("random", ["seed=abc"], "selector 'random': parameter seed must be an integer in [0, inf], got 'abc'"),
    ("random", ["seed=1.5"], "selector 'random': parameter seed must be an integer in [0, inf], got 1.5"),
    ("random", ["seed=-1"], "selector 'random': parameter seed must be an integer in [0, inf], got -1"),
    # no check_params of their own: the kind the parameter declares (default or annotation) is checked
    ("topk", ["column=mtld", "descending=yes"], "selector 'topk': parameter descending must be true or false, "
                                                "got 'yes'"),
    ("ifd", ["max_length=long"], "selector 'ifd': parameter max_length must be an integer, got 'long'"),
    ("alpagasus", ["threshold=[1]"], "selector 'alpagasus': parameter threshold must be a number, got [1]"),
])
def test_bad_parameter_values_fail_before_scoring(selector, params, message, data, tmp_path, capsys, tripwire):
    argv = ["select", "--data", str(data), "--selector", selector, "--budget", "2", "--out", str(tmp_path / "s.json")]
    for param in params:
        argv += ["--param", param]
    assert main(argv) == 2
    assert message in error_line(capsys)


def test_from_options_checks_parameter_values():
    from cherrybench.metrics import METRICS
    from cherrybench.selectors import SELECTORS

    with pytest.raises(ValueError, match="parameter tau"):
        SELECTORS.get("deita").from_options({"tau": 1.5, "model": "ignored: deita takes no model"})
    with pytest.raises(ValueError, match="parameter k must be an integer"):
        METRICS.get("knn").from_options({"k": 2.5})
    assert SELECTORS.get("deita").from_options({"tau": 1.0}).tau == 1.0


def test_compare_checks_every_selector_before_any_training(data, tracking, capsys, tripwire):
    argv = ["compare", "--data", str(data), "--eval-size", "4", "--selectors", "longest,deita", "--param", "tau=2",
            *tracking]
    assert main(argv) == 2
    assert "selector 'deita': parameter tau" in error_line(capsys)


def test_compare_refuses_a_param_seed_that_each_trial_seed_would_replace(data, tracking, capsys, tripwire):
    argv = ["compare", "--data", str(data), "--eval-size", "4", "--selectors", "random", "--no-baselines",
            "--budget", "5", "--param", "seed=3", *tracking]
    assert main(argv) == 2
    assert "--param seed: compare gives every selector the seed of each trial; use --seed N" in error_line(capsys)


@pytest.mark.parametrize("target", ["data", "eval", "directory"])
def test_regress_out_that_is_an_input_or_a_directory_fails_before_training(target, data, tmp_path, tracking, capsys,
                                                                           tripwire):
    evals = tmp_path / "ev.json"
    evals.write_text(json.dumps(ROWS[:4]))
    out = {"data": data, "eval": evals, "directory": tmp_path}[target]
    before = {p: p.read_bytes() for p in (data, evals)}
    argv = ["regress", "--data", str(data), "--eval", f"ev:{evals}", "--out", str(out), "--indicators", "mtld",
            "--subsets", "3", "--subset-size", "5", *tracking]
    assert main(argv) == 2
    expected = f"--out {out}: is a directory" if target == "directory" else \
        f"--out {out} is the input file {out}: refusing to overwrite it"
    assert expected in error_line(capsys)
    assert {p: p.read_bytes() for p in (data, evals)} == before


def test_param_without_equals_is_one_line(data, tmp_path, capsys, tripwire):
    argv = ["select", "--data", str(data), "--selector", "random", "--budget", "2", "--param", "seed",
            "--out", str(tmp_path / "s.json")]
    assert main(argv) == 2
    assert "--param expects KEY=VALUE, got 'seed'" in error_line(capsys)


# -- the MLflow URI ---------------------------------------------------------------------------
@pytest.mark.parametrize("uri", ["sqlite:///mlflow.db", "sqlite:////abs/m.db", "http://127.0.0.1:5000",
                                 "https://mlflow.example.com/prefix", "databricks", "databricks://profile",
                                 "postgresql://user:pw@host:5432/db", "mysql+pymysql://u@h/db"])
def test_tracking_uri_forms_mlflow_accepts(uri):
    from cherrybench.runners.checks import check_tracking_uri

    assert check_tracking_uri(uri) == uri


@pytest.mark.parametrize("uri", ["not a uri", "sqlite:/m.db", "sqlite:///", "http://", "http://host:99999",
                                 "ftp://host/x", "postgresql:db", ""])
def test_tracking_uri_syntax_errors_list_the_accepted_forms(uri):
    from cherrybench.runners.checks import check_tracking_uri

    with pytest.raises(ValueError, match=r"--tracking-uri .*accepted: sqlite:///PATH; http\(s\)://HOST"):
        check_tracking_uri(uri)


def test_file_store_follows_mlflow_switch(monkeypatch):
    from cherrybench.runners.checks import check_tracking_uri

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert check_tracking_uri("./mlruns") == "./mlruns" and check_tracking_uri("file:///tmp/mlruns")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    with pytest.raises(ValueError, match="MLFLOW_ALLOW_FILE_STORE=true"):
        check_tracking_uri("./mlruns")


# -- no traceback, ever (a real process) ---------------------------------------------------------
@pytest.mark.slow  # nine CLI processes: about 9 s of CPU
def test_user_mistakes_are_one_line_in_a_real_process(tmp_path):
    data = tmp_path / "d.json"
    data.write_text(json.dumps(ROWS))
    (tmp_path / "dir.csv").mkdir()
    (tmp_path / "afile").write_text("")
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    (tmp_path / "plugin.json").write_text("{}")
    (tmp_path / "raises.py").write_text("raise RuntimeError('plugin bug')\n")
    select = ["select", "--data", str(data), "--selector", "random", "--out", str(tmp_path / "s.json")]
    score = ["score", "--data", str(data), "--metrics", "length"]
    cases = [
        ([*select, "--budget", "inf"], "--budget must be a positive count"),
        ([*select, "--budget", "nan"], "--budget must be a positive count"),
        (["compare", "--data", str(data), "--eval-size", "4", "--tracking-uri", "not a uri"],
         "--tracking-uri 'not a uri'"),
        ([*score, "--out", str(tmp_path / "dir.csv")], "is a directory"),
        ([*score, "--out", str(tmp_path / "afile" / "x.csv")], "afile is not a directory"),
        ([*score, "--out", str(tmp_path / "x.csv"), "--model", str(broken)], "config.json is not valid JSON"),
        (["--plugin", str(tmp_path / "missing.py"), "metrics"], "missing.py: no such file"),
        (["metrics", "--plugin", str(tmp_path / "plugin.json")], "plugin.json: not a Python file"),
        (["--plugin", str(tmp_path / "raises.py"), "metrics"], "raises.py: failed to load (RuntimeError: plugin bug)"),
    ]
    running = [(argv, message, subprocess.Popen([sys.executable, "-m", "cherrybench", *argv], cwd=tmp_path, text=True,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE))
               for argv, message in cases]
    for argv, message, process in running:
        done = subprocess.CompletedProcess(argv, process.wait(timeout=300), *process.communicate())
        assert done.returncode == 2, (argv, done.stderr)
        assert "Traceback" not in done.stderr, (argv, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cherrybench: error: ") and message in lines[0], (argv, lines)


# -- plugins and the options of every subcommand ------------------------------------------------------
PLUGIN = """
from pathlib import Path
from cherrybench.selectors import Selection, Selector, register_selector
Path(__file__).with_suffix(".ran").write_text("ran")

@register_selector()
class {cls}(Selector):
    name = "{name}"

    def select(self, scores, budget, ctx):
        return Selection(scores["id"].head(budget.resolve(len(scores))).tolist(), {{"selector": self.name}})
"""


def plugin(tmp_path, name: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(PLUGIN.format(cls=name.title().replace("_", ""), name=name))
    return path


def test_plugins_run_only_after_the_arguments_parse(tmp_path, capsys):
    path = plugin(tmp_path, "ff_marker")
    assert main(["--plugin", str(path), "select", "--budget", "1"]) == 2  # --out and --selector missing
    assert "the following arguments are required" in error_line(capsys)
    assert not path.with_suffix(".ran").exists()


def test_plugin_before_and_after_the_subcommand_both_load(tmp_path, capsys):
    before, after = plugin(tmp_path, "ff_before"), plugin(tmp_path, "ff_after")
    assert main(["--plugin", str(before), "selectors", "--plugin", str(after)]) == 0
    listed = capsys.readouterr().out
    assert "ff_before" in listed and "ff_after" in listed


@pytest.mark.parametrize("flag, dest", [("-v", "verbose"), ("--verbose", "verbose"), ("--no-cache", "no_cache")])
def test_common_flags_work_before_or_after_the_subcommand(flag, dest):
    score = ["score", "--data", "d.json", "--metrics", "length", "--out", "s.csv"]
    parser = build_parser()
    assert getattr(parser.parse_args([flag, *score]), dest) is True
    assert getattr(parser.parse_args([*score, flag]), dest) is True
    assert getattr(parser.parse_args(score), dest) is False
    assert getattr(parser.parse_args([flag, "metrics"]), dest) is True  # not reset by the subcommand's parser
    assert getattr(parser.parse_args(["regress", "--data", "d.json", "--eval", "e.json", "--out", "r.json", flag]),
                   dest) is True


def test_help_and_readme_say_a_plugin_runs_code(capsys):
    assert main(["--help"]) == 0
    assert "runs the given file's Python code: only load files you trust" in " ".join(capsys.readouterr().out.split())
    section = README.read_text().split("## Adding a metric", 1)[1].split("\n## ", 1)[0]
    assert "`--plugin` runs the file's Python code" in " ".join(section.split())


def readme_commands() -> list[str]:
    text = README.read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if re.match(r"\s*cherrybench ", line)]


def test_every_readme_command_parses():
    """The README's command lines use flags that exist, with their current names."""
    commands = readme_commands()
    assert any(c.startswith("cherrybench regress") for c in commands)
    parser = build_parser()
    for command in commands:
        argv = shlex.split(command, comments=True)[1:]
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"README command does not parse: {command}")
