"""The plugin registry: did-you-mean errors, local plugin files (the README's
example, run as written), entry points, and checks common to every plugin."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cherrybench.metrics import METRICS
from cherrybench.registry import Registry, UnknownNameError, load_plugin_file
from cherrybench.selectors import SELECTORS

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_name_suggests_close_ones():
    with pytest.raises(UnknownNameError) as info:
        SELECTORS.get("longst")
    message = str(info.value)
    assert "Did you mean longest" in message and "Registered:" in message and "random" in message


def test_aliases_resolve_to_one_metric():
    assert METRICS.get("cas") is METRICS.get("ifd") is METRICS.get("ppl")
    assert METRICS.get("response_length") is METRICS.get("length")


def readme_plugin() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"```python\n(# my_metrics\.py\n.*?)```", text, re.S)
    assert match, "the README must keep its complete plugin example"
    return match.group(1)


def test_readme_plugin_example_works_as_written(tmp_path):
    plugin = tmp_path / "my_metrics.py"
    plugin.write_text(readme_plugin())
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "Why? How? When?", "output": "x"}\n{"instruction": "Why?", "output": "y"}\n'
                    '{"instruction": "Tell me.", "output": "z"}\n')
    run = lambda *a: subprocess.run([sys.executable, "-m", "cherrybench", "--plugin", str(plugin), *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=tmp_path)
    scored = run("score", "--data", str(data), "--metrics", "question_marks", "--out", str(tmp_path / "q.csv"),
                 "--no-progress")
    assert scored.returncode == 0, scored.stderr
    lines = (tmp_path / "q.csv").read_text().splitlines()
    assert lines[0].startswith("id,question_marks") and lines[1].startswith("0,3.0") and lines[3].startswith("2,0.0")
    picked = run("select", "--data", str(data), "--selector", "topk", "--param", "column=question_marks",
                 "--budget", "2", "--out", str(tmp_path / "top.jsonl"), "--no-progress")
    assert picked.returncode == 0, picked.stderr
    assert [l for l in (tmp_path / "top.jsonl").read_text().splitlines()] == data.read_text().splitlines()[:2]


def readme_selector_plugin() -> str:
    match = re.search(r"```python\n(# my_selectors\.py\n.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert match, "the README must keep its complete selector example"
    return match.group(1)


def test_readme_selector_example_works_as_written(tmp_path):
    """The selector file the README shows, beside its metric file, selects by that metric's column."""
    (tmp_path / "my_metrics.py").write_text(readme_plugin())
    (tmp_path / "my_selectors.py").write_text(readme_selector_plugin())
    data = tmp_path / "d.jsonl"
    rows = ['{"instruction": "Why?", "output": "a"}', '{"instruction": "Why? How? When?", "output": "b"}',
            '{"instruction": "Tell me.", "output": "c"}', '{"instruction": "How? Why?", "output": "d"}']
    data.write_text("\n".join(rows) + "\n")
    done = subprocess.run([sys.executable, "-m", "cherrybench", "--plugin", "my_metrics.py", "--plugin", "my_selectors.py",
                           "select", "--data", str(data), "--selector", "most_questions", "--budget", "2",
                           "--out", "most.jsonl", "--no-progress"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "most.jsonl").read_text().splitlines() == [rows[1], rows[3]]  # 3 and 2 questions, input order


def test_entry_point_plugins_load(tmp_path, monkeypatch):
    """A distribution on sys.path declaring the entry-point group is found."""
    (tmp_path / "ep_plugin.py").write_text(
        "from cherrybench.selectors import Selector, register_selector\n"
        "@register_selector()\nclass First(Selector):\n    name = 'ep_first'\n")
    dist = tmp_path / "ep_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[cherrybench.selectors]\nep_first = ep_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("selector", "cherrybench.selectors")
    # the fresh registry loads the group; the plugin registered itself into the global one
    registry.names()
    assert "ep_first" in SELECTORS._items


def test_plugin_validated_when_it_loads(tmp_path):
    bad = tmp_path / "bad_plugin.py"
    bad.write_text("from cherrybench.metrics import Metric, register_metric\n"
                   "@register_metric()\nclass NoColumns(Metric):\n    name = 'no_columns'\n")
    with pytest.raises(TypeError, match="must declare its output `columns`"):
        load_plugin_file(bad)


@pytest.mark.parametrize("name", METRICS.names())
def test_every_metric_params_round_trip(name):
    cls = METRICS.get(name)
    metric = cls()
    clone = cls(**metric.get_params())
    assert clone.get_params() == metric.get_params()
    assert repr(clone) == repr(metric)
    assert metric.output_columns[-1] == f"{metric.name}_reason"


@pytest.mark.parametrize("name", SELECTORS.names())
def test_every_selector_params_round_trip(name):
    cls = SELECTORS.get(name)
    selector = cls()
    assert cls(**selector.get_params()).get_params() == selector.get_params()
    for metric in selector.requires():
        assert METRICS.get(metric.name) is type(metric) or issubclass(type(metric), METRICS.get(metric.name))


def test_a_selector_returning_a_tuple_is_one_line_naming_it(tmp_path):
    """The README says select() returns Selection(ids, report); a plugin returning a bare tuple
    gets a one-line error naming the selector and the type, exit 2, not an AttributeError."""
    plugin = tmp_path / "tuple_selector.py"
    plugin.write_text("from cherrybench.selectors import Selector, register_selector\n\n\n"
                      "@register_selector()\nclass Tuple(Selector):\n    name = 'returns_tuple'\n\n"
                      "    def select(self, scores, budget, ctx):\n        return list(scores['id'][:1]), {}\n")
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "output": "x"}\n{"instruction": "b", "output": "y"}\n')
    done = subprocess.run([sys.executable, "-m", "cherrybench", "--plugin", str(plugin), "select", "--data", str(data),
                           "--selector", "returns_tuple", "--budget", "1", "--out", "o.jsonl", "--no-progress"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "selector 'returns_tuple': select() must return cherrybench.selectors.Selection" in done.stderr
    assert "not tuple" in done.stderr and not (tmp_path / "o.jsonl").exists()


def test_membership_knows_names_and_aliases_without_raising():
    assert "ifd" in METRICS and "cas" in METRICS and "longest" in SELECTORS
    assert "longst" not in SELECTORS and "nope" not in METRICS
