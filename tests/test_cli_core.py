"""`cherrybench score` and `select` end to end on a small real file with the real model."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cherrybench.cli import main
from cherrybench.default_data import load_sharegpt_sample

ROWS = [
    {"instruction": "Give a synonym for happy.", "input": "", "output": "Joyful."},
    {"instruction": "List two planets.", "input": "", "output": "Mars and Jupiter are planets of the solar system."},
    {"instruction": "Translate to German.", "input": "Good morning", "output": "Guten Morgen."},
    {"instruction": "Say nothing.", "input": "", "output": ""},
    {"instruction": "Explain rain briefly.", "input": "",
     "output": "Rain forms when water vapour condenses into droplets that grow heavy enough to fall."},
]


@pytest.mark.slow
def test_score_then_select(tmp_path, capsys):
    data = tmp_path / "pool.json"
    data.write_text(json.dumps(ROWS))
    scores = tmp_path / "scores.parquet"
    assert main(["score", "--data", str(data), "--metrics", "ifd,length", "--out", str(scores), "--no-progress",
                 "--device", "cpu"]) == 0
    table = pd.read_parquet(scores)
    assert list(table["id"]) == ["0", "1", "2", "3", "4"]
    assert {"cas", "das", "ifd", "ifd_ppl", "ppl", "ifd_reason", "response_length"} <= set(table.columns)
    assert table.loc[3, "ifd_reason"] == "empty_answer" and pd.isna(table.loc[3, "ifd"])

    out = tmp_path / "subset.json"
    assert main(["select", "--data", str(data), "--selector", "ifd", "--budget", "2", "--scores", str(scores),
                 "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    subset = json.loads(out.read_text())
    report = json.loads((tmp_path / "subset.report.json").read_text())
    valid = table[table["ifd"] < 1].sort_values(["ifd", "id"], ascending=[False, True])
    expected = list(valid["id"].head(2))
    assert report["ids"] == expected
    assert subset == [ROWS[int(i)] for i in sorted(expected, key=int)]
    assert report["excluded"]["no_ifd:empty_answer"] == 1
    assert report["n_kept"] == 2 and report["n_input"] == 5


def test_cli_errors_name_the_problem(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a"}\n')
    assert main(["score", "--data", str(bad), "--metrics", "length", "--out", str(tmp_path / "x.parquet")]) == 2
    assert "bad.jsonl:1: missing field 'output'" in capsys.readouterr().err
    good = tmp_path / "good.jsonl"
    good.write_text('{"instruction": "a", "output": "b"}\n')
    assert main(["select", "--data", str(good), "--selector", "idf", "--budget", "1", "--out", str(tmp_path / "o.json")]) == 2
    assert "unknown selector 'idf'. Did you mean ifd" in capsys.readouterr().err


@pytest.mark.slow  # parses the embedded ShareGPT file three times
def test_default_sample_is_deterministic_and_reports_skips():
    a, report = load_sharegpt_sample(30, seed=3)
    b, _ = load_sharegpt_sample(30, seed=3)
    c, _ = load_sharegpt_sample(30, seed=4)
    assert [r.id for r in a.records] == [r.id for r in b.records] != [r.id for r in c.records]
    assert report.sampled == 30 and report.valid + sum(report.skipped.values()) == report.parsed + 1
    assert report.skipped["truncated_at_end_of_file"] == 1 and report.skipped["starts_with_answer"] > 0
