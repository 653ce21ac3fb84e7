"""The contamination and duplicate audit (cherrybench/audit.py, `cherrybench audit`,
compare's pool audit, select --dedup): the normaliser on hand-worked strings, a
planted exact, near and paraphrased leak plus a clean control at each level,
MinHash LSH candidates against brute-force Jaccard, exact cosine pairs against a
double loop, and the command's outputs and exit status."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from cherrybench.audit import (POOL, AuditSettings, audit, candidate_pairs, cosine_pairs, gram_hashes, minhashes,
                               normalize, shingles, summary, words, _WordHasher)
from cherrybench.cli import main
from cherrybench.eval_sets import EvalSet
from cherrybench.records import Record, Turn

E_EXACT = ("Describe the water cycle in detail, including evaporation, condensation, precipitation and collection, "
           "for a class of ten year old students.")
E_NEAR = ("Write a persuasive letter to the city council asking them to build a new public library in our "
          "neighbourhood, explaining how it would help children, students, older residents and small local "
          "businesses that depend on the foot traffic it brings.")
E_PARA = "What are the main differences between Python and JavaScript programming languages?"
E_SHORT = "Write a short poem about autumn leaves falling."  # 8 words: matched whole at the exact level

P_EXACT = ("Question: DESCRIBE the water cycle in detail -- including evaporation, condensation, precipitation AND "
           "collection -- for a class of ten-year-old students?")
P_NEAR = E_NEAR.replace("Write a", "Draft a").replace("it brings.", "it creates.")
P_PARA = "How do the Python and JavaScript programming languages differ from each other?"
P_SHORT = "Please write a short poem about autumn leaves falling, in the style of Basho."
P_CLEAN = "Give me a recipe for a vegetarian lasagna with spinach and ricotta."


def rec(rid: str, question: str, answer: str = "An answer.") -> Record:
    return Record(rid, [Turn(question, answer)])


EVALS = [EvalSet("vic", [rec("e_exact", E_EXACT, ""), rec("e_near", E_NEAR, ""), rec("e_para", E_PARA, ""),
                         rec("e_short", E_SHORT, "")])]
POOL_RECORDS = [rec("p_exact", P_EXACT), rec("p_near", P_NEAR), rec("p_para", P_PARA), rec("p_short", P_SHORT),
                rec("p_clean", P_CLEAN)]


def eval_hits(result, level):
    return {(h.pool_id, h.other_id): h for h in result.eval_hits([level])}


# -- the normaliser -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("Hello,   World!!", "hello world"),
    ("Straße", "strasse"),                      # case-folded, not just lower-cased
    ("STRASSE", "strasse"),
    ("Cafe\u0301 au lait", "caf\u00e9 au lait"),  # NFC: e + combining acute becomes é
    ("don't stop—now_here", "don t stop now here"),  # apostrophe, dash and underscore are punctuation
    ("3.14 + x²", "3 14 x²"),                   # digits (² too) are kept, symbols collapse
    ("हिन्दी भाषा", "हिन्दी भाषा"),              # combining marks stay inside their word
    ("  ...  ", ""),
])
def test_normaliser_on_hand_worked_strings(text, expected):
    assert normalize(text) == expected
    assert words(text) == expected.split()


def test_a_13_gram_is_shared_and_a_12_gram_is_not():
    shared = [f"word{i}" for i in range(13)]
    pool = [rec("p13", " ".join(["alpha", "beta"] + shared + ["gamma"])),
            rec("p12", " ".join(["delta"] + shared[:12] + ["epsilon", "zeta"]))]
    evals = [EvalSet("ev", [rec("e", " ".join(["omega"] + shared + ["psi", "chi"]), "")])]
    result = audit(pool, evals, AuditSettings(levels=("exact",), dedup_levels=()))
    hits = eval_hits(result, "exact")
    assert set(hits) == {("p13", "e")}
    assert hits[("p13", "e")].evidence == " ".join(shared)  # the shared span, normalised
    assert hits[("p13", "e")].score == pytest.approx(13 / 16)  # span over the shorter text (eval: 16 words)


def test_gram_hashes_follow_content_not_position():
    hasher = _WordHasher()
    a = hasher("x y a b c z".split())
    b = hasher("a b c".split())
    assert gram_hashes(a, 3)[2] == gram_hashes(b, 3)[0]
    assert len(set(gram_hashes(a, 3).tolist())) == 4  # every window of distinct words differs
    assert len(gram_hashes(b, 4)) == 0


# -- each level against planted leaks and a clean control --------------------------------------------------------
def test_exact_level_finds_the_verbatim_leaks_only():
    result = audit(POOL_RECORDS, EVALS, AuditSettings(levels=("exact",), dedup_levels=()))
    hits = eval_hits(result, "exact")
    assert hits[("p_exact", "e_exact")].score == 1.0  # the whole eval question, case and punctuation aside
    assert hits[("p_exact", "e_exact")].evidence == normalize(E_EXACT)
    assert hits[("p_short", "e_short")].score == 1.0  # 8 words >= min_words: matched whole
    assert ("p_near", "e_near") in hits  # a small edit keeps long verbatim spans
    n = len(words(E_NEAR))
    assert hits[("p_near", "e_near")].score == pytest.approx((n - 2) / n, abs=1e-6)  # all but the first and last word
    assert not {k for k in hits if k[0] in ("p_para", "p_clean")}  # a paraphrase shares no 13-gram
    assert result.contaminated(["exact"]) == ["p_exact", "p_near", "p_short"]  # pool order
    stricter = audit(POOL_RECORDS, EVALS, AuditSettings(levels=("exact",), dedup_levels=(), min_words=9))
    assert ("p_short", "e_short") not in eval_hits(stricter, "exact")  # 8 words < min_words 9


def test_near_level_finds_the_edited_leak_with_its_exact_jaccard():
    result = audit(POOL_RECORDS, EVALS, AuditSettings(levels=("near",), dedup_levels=()))
    hits = eval_hits(result, "near")
    a = {tuple(w) for w in _windows(words(P_NEAR), 5)}
    b = {tuple(w) for w in _windows(words(E_NEAR), 5)}
    assert hits[("p_near", "e_near")].score == pytest.approx(len(a & b) / len(a | b), abs=1e-6)
    assert 0.8 <= hits[("p_near", "e_near")].score < 1
    assert ("p_exact", "e_exact") in hits  # normalisation makes it Jaccard 1 minus the prefix
    assert not {k for k in hits if k[0] in ("p_para", "p_clean")}
    looser = audit(POOL_RECORDS, EVALS, AuditSettings(levels=("near",), dedup_levels=(), jaccard=0.95,
                                                      lsh_threshold=0.55))
    assert ("p_near", "e_near") not in eval_hits(looser, "near")  # the threshold is the one given


@pytest.mark.slow  # loads MiniLM
def test_semantic_level_finds_the_paraphrase_and_not_the_clean_record(ctx):
    result = audit(POOL_RECORDS, EVALS, AuditSettings(levels=("semantic",), dedup_levels=()), ctx)
    hits = eval_hits(result, "semantic")
    assert hits[("p_para", "e_para")].score >= 0.9
    assert not {k for k in hits if k[0] == "p_clean"}
    assert "p_para" not in audit(POOL_RECORDS, EVALS, AuditSettings(levels=("exact", "near"),
                                                                      dedup_levels=())).contaminated()


def _windows(tokens, k):
    return [tokens[i: i + k] for i in range(len(tokens) - k + 1)] or [tokens]


def test_duplicates_within_the_pool_keep_the_first_of_each_group():
    long = ("The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden fence "
            "and the children laugh in the warm afternoon sun near the river bank")
    pool = [rec("a", "Name three primary colours.", "Red, yellow and blue."),
            rec("b", long, "A scene."),
            rec("c", "NAME three primary colours", "red; yellow AND blue!"),  # exact duplicate of a
            rec("d", long.replace("The quick", "A quick"), "A scene."),     # near duplicate of b
            rec("e", "Name three primary colours.", "Red, yellow and blue."),  # exact duplicate of a and c
            rec("f", P_CLEAN, "Layer pasta.")]
    result = audit(pool, [], AuditSettings(levels=(), dedup_levels=("exact", "near")))
    assert result.duplicate_groups("exact") == [["a", "c", "e"]]
    assert result.duplicates_to_drop("exact") == ["c", "e"]
    assert result.duplicate_groups("near") == [["a", "c", "e"], ["b", "d"]]
    assert result.duplicates_to_drop("near") == ["c", "d", "e"]
    assert result.duplicate_groups("near", exclude=["a"]) == [["b", "d"], ["c", "e"]]  # c now comes first
    dup = next(h for h in result.hits if h.level == "exact" and h.pool_id == "c")
    assert (dup.other, dup.other_id, dup.score) == (POOL, "a", 1.0)  # the later record names the earlier
    info = summary(result, {"duplicates": result.duplicates_to_drop("near")})
    assert info["counts"]["near"][POOL] == {"duplicate_groups": 2, "duplicate_records": 3}
    assert info["dropped"] == {"duplicates": ["c", "d", "e"]}
    json.dumps(info)  # JSON-able, for the manifest and MLflow


# -- MinHash LSH against brute force ----------------------------------------------------------------------------
def test_minhash_candidates_recall_brute_force_jaccard_pairs():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(3000)]
    texts = []
    for _ in range(100):
        base = list(rng.choice(vocab, size=int(rng.integers(40, 90))))
        texts.append(base)
        for _ in range(2):  # variants with a few words replaced: Jaccard from about 0.4 to 1
            rate = rng.uniform(0, 0.06)
            texts.append([str(rng.choice(vocab)) if rng.random() < rate else w for w in base])
    records = [rec(str(i), " ".join(t), "") for i, t in enumerate(texts)]
    sets = [{tuple(w) for w in _windows(t, 5)} for t in texts]
    truth = {}
    for i, j in itertools.combinations(range(len(sets)), 2):
        jac = len(sets[i] & sets[j]) / len(sets[i] | sets[j])
        if jac >= 0.8:
            truth[(i, j)] = jac
    assert len(truth) >= 60 and sum(v < 0.85 for v in truth.values()) >= 5  # pairs near the threshold too

    settings = AuditSettings()
    hasher = _WordHasher()
    signatures = minhashes([shingles(hasher(t), 5) for t in texts], settings.num_perm)
    candidates = candidate_pairs(signatures, None, settings)
    recall = len(set(truth) & candidates) / len(truth)
    assert recall >= 0.95, recall

    result = audit(records, [], AuditSettings(levels=(), dedup_levels=("near",), dedup_text="question"))
    found = {(int(h.other_id), int(h.pool_id)): h.score for h in result.hits}
    assert set(found) == set(truth) & candidates  # every candidate verified by its exact Jaccard
    assert all(found[p] == pytest.approx(truth[p], abs=1e-6) for p in found)
    again = audit(records, [], AuditSettings(levels=(), dedup_levels=("near",), dedup_text="question"))
    assert again.hits == result.hits  # deterministic


def test_cosine_pairs_match_a_double_loop():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(37, 8)).astype(np.float32)
    a[5] = a[3] * 2 + 0.01  # near-parallel rows
    b = rng.normal(size=(11, 8)).astype(np.float32)
    b[4] = a[7]
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    naive_ab = {(i, j) for i in range(37) for j in range(11) if unit(a)[i] @ unit(b)[j] >= 0.6}
    naive_aa = {(i, j) for i in range(37) for j in range(i + 1, 37) if unit(a)[i] @ unit(a)[j] >= 0.6}
    assert {(i, j) for i, j, _ in cosine_pairs(a, b, 0.6, block=8)} == naive_ab
    assert {(i, j) for i, j, _ in cosine_pairs(a, None, 0.6, block=8)} == naive_aa
    assert (3, 5) in naive_aa and (7, 4) in naive_ab


# -- the command --------------------------------------------------------------------------------------------------
@pytest.fixture
def files(tmp_path):
    pool = tmp_path / "pool.json"
    rows = [{"id": r.id, "instruction": r.instruction, "input": "", "output": r.output} for r in POOL_RECORDS]
    rows.append({"id": "p_dup", "instruction": P_CLEAN.upper(), "input": "", "output": "AN ANSWER"})
    pool.write_text(json.dumps(rows))
    vic = tmp_path / "vic.jsonl"
    vic.write_text("".join(json.dumps({"question_id": r.id, "text": r.instruction}) + "\n" for r in EVALS[0].records))
    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps({"question_id": 1, "text": "Explain how a bicycle gear system works for beginners "
                                                           "who have never ridden one before today."}) + "\n")
    return pool, vic, clean


def test_audit_command_writes_reports_and_exits_1_on_contamination(files, tmp_path, capsys):
    pool, vic, _ = files
    out = tmp_path / "audit"
    assert main(["audit", "--data", str(pool), "--eval", f"vic:{vic}", "--levels", "exact,near",
                 "--out", str(out)]) == 1
    report = json.loads((out / "report.json").read_text())
    exact = [h for h in report["hits"] if h["level"] == "exact" and h["other"] == "vic"]
    assert {(h["pool_id"], h["other_id"]) for h in exact} == {("p_exact", "e_exact"), ("p_near", "e_near"),
                                                            ("p_short", "e_short")}
    assert all(h["evidence"] and 0 < h["score"] <= 1 for h in report["hits"])
    assert report["counts"]["exact"]["vic"] == {"pool_records": 3, "eval_records": 3}
    assert report["counts"]["near"][POOL] == {"duplicate_groups": 1, "duplicate_records": 1}
    markdown = (out / "report.md").read_text()
    assert "| exact | vic | 3 | 3 |" in markdown and "| near | the pool itself | 1 | 1 groups |" in markdown
    assert "| exact | 1.000 | p_exact | Question: DESCRIBE the water cycle" in markdown  # side by side
    flags = pd.read_parquet(out / "flags.parquet")
    assert list(flags["id"]) == [r.id for r in POOL_RECORDS] + ["p_dup"]
    assert flags.set_index("id")["contaminated_exact"].to_dict() == {
        "p_exact": True, "p_near": True, "p_para": False, "p_short": True, "p_clean": False, "p_dup": False}
    assert flags.set_index("id")["duplicate_of_exact"].to_dict()["p_dup"] == "p_clean"
    assert "contamination at exact, near" in capsys.readouterr().err


def test_audit_command_exits_0_when_clean_or_not_failing(files, tmp_path):
    pool, vic, clean = files
    assert main(["audit", "--data", str(pool), "--eval", f"clean:{clean}", "--levels", "exact,near",
                 "--out", str(tmp_path / "a")]) == 0
    assert main(["audit", "--data", str(pool), "--eval", f"vic:{vic}", "--levels", "exact,near", "--fail-on", "none",
                 "--out", str(tmp_path / "b")]) == 0


@pytest.mark.parametrize("extra, message", [
    (["--eval", "missing:nowhere.jsonl"], "nowhere.jsonl: no such eval file"),
    (["--levels", "exact,fuzzy"], "--levels: unknown level 'fuzzy'"),
    (["--levels", "exact", "--fail-on", "near"], "--fail-on near: near is not among --levels exact"),
    (["--jaccard", "0.5"], "--lsh-threshold 0.55 above jaccard 0.5"),
    (["--jaccard", "1.5"], "expected a number in (0, 1]"),
])
def test_audit_command_bad_input_is_one_line_and_status_2(files, tmp_path, capsys, extra, message):
    pool, vic, _ = files
    assert main(["audit", "--data", str(pool), "--eval", f"vic:{vic}", "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cherrybench: error: ") and "\n" not in err and message in err, err
    assert not (tmp_path / "o").exists()  # nothing written


def test_audit_out_that_is_a_file_is_refused(files, capsys):
    pool, vic, _ = files
    assert main(["audit", "--data", str(pool), "--eval", f"vic:{vic}", "--out", str(pool)]) == 2
    assert "is a file; give a directory" in capsys.readouterr().err


# -- select --dedup and compare's pool audit -------------------------------------------------------------------
def test_select_dedup_drops_later_duplicates_and_reports_groups(files, tmp_path):
    pool, _, _ = files
    scores = tmp_path / "s.parquet"
    assert main(["score", "--data", str(pool), "--metrics", "mtld", "--out", str(scores)]) == 0
    out = tmp_path / "sub.json"
    assert main(["select", "--data", str(pool), "--scores", str(scores), "--selector", "random", "--budget", "0.99",
                 "--dedup", "exact", "--out", str(out)]) == 0  # a score table for the data as read still fits
    report = json.loads((tmp_path / "sub.report.json").read_text())
    assert report["dedup"]["groups"] == [["p_clean", "p_dup"]] and report["dedup"]["n_dropped"] == 1
    kept = [r["id"] for r in json.loads(out.read_text())]
    assert "p_dup" not in kept and "p_clean" in kept and len(kept) == 5  # 0.99 of the 5 left


def _compare_args(tmp_path, data, *extra):
    from cherrybench.cli import build_parser

    return build_parser().parse_args(["compare", "--data", str(data), "--eval-size", "4", "--budget", "3",
                                      "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", *extra])


@pytest.fixture
def compare_data(tmp_path):
    """24 records: 6 questions twice each (duplicates, some across the held-out split) and 12 unique."""
    rows = [{"id": f"u{i}", "instruction": f"Unique question {i}: tell me about topic number {i} in a few words.",
             "input": "", "output": f"Topic {i} is about {i * 7} things, described briefly."} for i in range(12)]
    for i in range(6):
        row = {"instruction": f"Repeated question {i}: what is the colour of object number {i} today?",
               "input": "", "output": f"Object {i} is coloured shade {i}."}
        rows.insert(2 * i + 1, dict(row, id=f"d{i}a"))
        rows.append(dict(row, id=f"d{i}b"))
    path = tmp_path / "data.json"
    path.write_text(json.dumps(rows))
    vic = tmp_path / "vic.jsonl"  # an eval prompt that repeats u3's question
    vic.write_text(json.dumps({"question_id": 1, "text": rows[[r["id"] for r in rows].index("u3")]["instruction"]})
                   + "\n")
    return path, vic


def test_compare_audit_drops_contamination_then_duplicates(tmp_path, compare_data):
    from cherrybench.runners.compare import check_compare
    from cherrybench.runners.comparison import audit_step, load_comparison

    data, vic = compare_data
    args = _compare_args(tmp_path, data, "--eval", f"vic:{vic}")
    check_compare(args)
    args.seed = 0
    comparison = load_comparison(args)
    before = comparison.pool.records
    cleaned, audited = audit_step(comparison, args, None)
    text = {r.id: normalize(r.instruction + " " + r.output) for r in before}
    held = {normalize(r.instruction + " " + r.output) for r in comparison.evals[0].records}
    # independently: contaminated = repeats a held-out record or the vic prompt; then later repeats in the pool
    contaminated = [r.id for r in before if text[r.id] in held or r.id == "u3"]
    seen, duplicates = set(), []
    for r in before:
        if r.id in contaminated:
            continue
        (duplicates.append(r.id) if text[r.id] in seen else seen.add(text[r.id]))
    assert audited.dropped == {"contamination": contaminated, "duplicates": duplicates}
    assert "u3" in contaminated and contaminated != ["u3"] and duplicates  # all three kinds happen
    assert [r.id for r in cleaned.pool.records] == [r.id for r in before if r.id not in contaminated + duplicates]
    assert cleaned.evals == comparison.evals  # eval sets are never touched
    assert cleaned.audit["dropped"] == audited.dropped and cleaned.audit["pool_records"] == len(before)

    keep = _compare_args(tmp_path, data, "--eval", f"vic:{vic}", "--contamination", "keep", "--dedup", "off")
    check_compare(keep)
    kept, audited_keep = audit_step(load_comparison(keep), keep, None)
    assert len(kept.pool.records) == len(before) and audited_keep.result.contaminated() == contaminated


def test_compare_contamination_fail_stops_before_any_training(tmp_path, compare_data, capsys, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("trained before the audit refused the pool")

    monkeypatch.setattr("cherrybench.runners.trial_steps.finetuned_model", boom)
    monkeypatch.setattr("cherrybench.scoring.score", boom)
    data, vic = compare_data
    argv = ["compare", "--data", str(data), "--eval-size", "4", "--budget", "3", "--eval", f"vic:{vic}",
            "--contamination", "fail", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("cherrybench: error: --contamination fail:") and "repeat an eval record" in err


def test_compare_flags_are_checked_before_work(tmp_path, compare_data, capsys):
    data, _ = compare_data
    assert main(["compare", "--data", str(data), "--eval-size", "4", "--contamination-levels", "exact,wrong",
                 "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    assert "--contamination-levels: unknown level 'wrong'" in capsys.readouterr().err


@pytest.mark.slow  # one real fine-tune of 2 records at 64 tokens
def test_compare_logs_the_audit_to_mlflow_and_the_leaderboard(tmp_path, compare_data, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    data, vic = compare_data
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["compare", "--data", str(data), "--eval-size", "4", "--pool-size", "16", "--budget", "2",
                 "--eval", f"vic:{vic}", "--selectors", "longest", "--no-baselines", "--pairwise-baseline", "longest",
                 "--gen-size", "0", "--max-length", "64", "--no-progress", "--device", "cpu", "--experiment", "aud",
                 "--tracking-uri", uri]) == 0
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("aud").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("cherrybench.role") == "parent")
    child = next(r for r in runs if r.data.tags.get("cherrybench.role") == "child")
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "audit")} == {
        "audit/report.json", "audit/report.md", "audit/flags.parquet"}
    report = json.loads(open(client.download_artifacts(parent.info.run_id, "audit/report.json", str(tmp_path))).read())
    dropped = report["dropped"]
    assert "u3" in dropped["contamination"]
    metrics = parent.data.metrics
    assert metrics["audit.dropped.contamination"] == len(dropped["contamination"])
    assert metrics["audit.dropped.duplicates"] == len(dropped["duplicates"])
    assert metrics["audit.pool_records"] == 16
    assert parent.data.params["pool_size"] == str(16 - len(dropped["contamination"]) - len(dropped["duplicates"]))
    assert parent.data.params["audit.dedup"] == "near" and parent.data.params["audit.contamination"] == "drop"
    selection = json.loads(open(client.download_artifacts(child.info.run_id, "selection_report.json",
                                                          str(tmp_path))).read())
    assert selection["pool_audit"]["dropped"] == dropped
    board = (tmp_path / "leaderboards" / "aud.md").read_text()
    assert f"Pool audit: of 16 pool records, {len(dropped['contamination'])} repeat an eval record" in board
