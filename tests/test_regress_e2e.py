"""A real regress run end to end: the embedded SmolLM2 fine-tuned on tiny
subsets of two source files, eval loss on a held-out file, the fit, the rule
file, nested MLflow runs in a real SQLite store, and resumption (a second run
with more subsets trains only the new ones)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cherrybench.cli import main

pytestmark = pytest.mark.slow  # every test here loads a real model


def write(path, rows):
    path.write_text(json.dumps(rows))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("regress")
    short = [{"instruction": f"Say the number {i}.", "input": "", "output": f"{i}"} for i in range(12)]
    long = [{"instruction": f"Describe the number {i}.", "input": "",
             "output": f"The number {i} is an integer; it comes after {i - 1} and before {i + 1}."} for i in range(12)]
    evals = [{"instruction": f"What comes after {i}?", "input": "", "output": f"{i + 1} comes after {i}."}
             for i in range(20, 26)]
    return root, write(root / "short.json", short), write(root / "long.json", long), write(root / "eval.json", evals)


def run(root, a, b, ev, subsets, indicators, capsys, expect=0):
    argv = ["regress", "--data", a, "--data", b, "--eval", f"heldout:{ev}", "--subsets", str(subsets),
            "--subset-size", "6", "--max-length", "64", "--train-batch-size", "6", "--learning-rate", "1e-4",
            "--indicators", indicators, "--out", str(root / "rule.json"), "--no-progress", "--device", "cpu",
            "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}", "--experiment", "regress-test"]
    assert main(argv) == expect
    return capsys.readouterr()


def test_regress_end_to_end_and_resume(files, capsys, ctx):
    import mlflow
    from mlflow.tracking import MlflowClient

    root, a, b, ev = files
    # too few subsets for the indicators: refused before any scoring or training
    early = run(root, a, b, ev, 2, "output_length", capsys, expect=2)
    assert "at least indicators + 2 = 3 subsets" in early.err and "training)" not in early.err
    # interrupted (as by Ctrl-C) after two subsets were trained, before the third started
    from cherrybench.runners import tracking

    real, calls = tracking.finished_trial, []

    def interrupt_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tracking, "finished_trial", interrupt_third)
        interrupted = run(root, a, b, ev, 3, "output_length", capsys, expect=130)  # exit 130, how to resume
    assert interrupted.err.count("s training)") == 2 and "run the same command again to resume" in interrupted.err
    second = run(root, a, b, ev, 3, "output_length", capsys)
    assert second.err.count("(cached)") == 2 and second.err.count("s training)") == 1

    rule = json.loads((root / "rule.json").read_text())
    assert rule["format"] == "cherrybench.instructmining.rule/1"
    assert set(rule["coefficients"]) == {"output_length"}
    assert rule["indicators"]["output_length"]["metric"] == "length"

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("regress-test")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("cherrybench.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("cherrybench.role") == "child"]
    assert len(parents) == 2 and len(children) == 3  # the resumed run logged only the new subset
    assert all(c.data.tags.get("mlflow.parentRunId") in {p.info.run_id for p in parents} for c in children)
    assert all(c.info.status == "FINISHED" and "eval_loss" in c.data.metrics for c in children)
    latest = max(parents, key=lambda r: r.info.start_time)
    assert latest.info.status == "FINISHED"
    artifacts = {f.path for f in client.list_artifacts(latest.info.run_id)}
    assert {"rule.json", "fit_summary.txt", "predicted_vs_actual.png", "subsets.csv"} <= artifacts
    assert latest.data.metrics["r2"] == pytest.approx(rule["fit"]["r2"])

    # the table behind the fit: subset means computed here, the fit redone with numpy
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=latest.info.run_id, artifact_path="subsets.csv",
                                                           tracking_uri=f"sqlite:///{root / 'mlflow.db'}"))
    assert len(table) == 3 and (table["n.short"] + table["n.long"] == 6).all()
    assert np.allclose(table["log_eval_loss"], np.log(table["eval_loss"]))
    sources = {"short": json.loads(open(a).read()), "long": json.loads(open(b).read())}
    tokenizer = ctx.tokenizer()
    from cherrybench.regress.subsets import draw_subsets

    drawn = draw_subsets({name: [f"{name}:{i}" for i in range(12)] for name in sources}, 3, 6, seed=0, mix="dirichlet")
    for row, ids in zip(table.itertuples(), drawn):
        outputs = [sources[x.split(":")[0]][int(x.split(":")[1])]["output"] for x in ids]
        lengths = [len(tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outputs]
        assert row.output_length == pytest.approx(np.mean(lengths))
    A = np.column_stack([np.ones(3), table[["output_length"]].to_numpy()])
    beta, *_ = np.linalg.lstsq(A, table["log_eval_loss"].to_numpy(), rcond=None)
    assert [rule["intercept"], rule["coefficients"]["output_length"]] == pytest.approx(beta.tolist(), rel=1e-6, abs=1e-9)
