"""`cherrybench audit`: find pool records that repeat an eval record (contamination)
or an earlier pool record (duplicates), and write `report.json`, `report.md` and
`flags.parquet` into `--out`. Exit status 1 when a hit against an eval set at a
level of `--fail-on` is found, 0 otherwise, 2 on bad input. The detection is
`cherrybench.audit`; `write_audit` is shared with `compare`.

    cherrybench audit --data pool.json --eval vicuna:vicuna_test_set.jsonl --out audit/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cherrybench.audit import LEVELS, POOL, TEXTS, AuditResult, AuditSettings, audit, flags_frame, summary
from cherrybench.eval_sets import load_eval_set
from cherrybench.outputs import atomic_write, check_output
from cherrybench.runners.options import add_data_arguments, positive_int

REPORT_FILES = ("report.json", "report.md", "flags.parquet")
SHOWN = 20  # strongest hits shown side by side in report.md


def parse_levels(text: str, flag: str) -> tuple:
    """`exact,near` -> ("exact", "near") in LEVELS order; `none` or '' -> ()."""
    names = [n.strip() for n in (text or "").split(",") if n.strip() and n.strip() != "none"]
    unknown = [n for n in names if n not in LEVELS]
    if unknown:
        raise ValueError(f"{flag}: unknown level {unknown[0]!r}; choose from {', '.join(LEVELS)} (or none)")
    return tuple(level for level in LEVELS if level in names)


def unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    group = parser.add_argument_group("audit")
    group.add_argument("--eval", action="append", default=[], metavar="[NAME:]PATH",
                       help="an eval set the pool must not repeat (the five paper test sets or any supported "
                            "format); repeatable")
    group.add_argument("--out", required=True, help="directory for report.json, report.md and flags.parquet")
    group.add_argument("--levels", default="exact,near,semantic",
                       help="levels to check, against the eval sets and within the pool (default exact,near,semantic)")
    group.add_argument("--text", choices=TEXTS, default="question",
                       help="compared against eval sets: each turn's question with its input (default), each "
                            "turn's answer, or the whole conversation")
    group.add_argument("--dedup-text", choices=[*TEXTS, "off"], default="conversation",
                       help="compared within the pool, one text per record (default conversation); off: no "
                            "duplicate search")
    group.add_argument("--fail-on",
                       help="exit status 1 when the pool repeats an eval record at one of these levels "
                            "(default: exact and near where checked; none: never)")
    group.add_argument("--ngram", type=positive_int, default=13, help="exact: shared normalised word n-gram (13)")
    group.add_argument("--min-words", type=positive_int, default=8,
                       help="exact: an eval text shorter than --ngram words matches whole if it has this many (8)")
    group.add_argument("--shingle", type=positive_int, default=5, help="near: words per shingle (5)")
    group.add_argument("--jaccard", type=unit_interval, default=0.8, help="near: exact Jaccard a candidate needs (0.8)")
    group.add_argument("--lsh-threshold", type=unit_interval, default=0.55,
                       help="near: the LSH threshold datasketch picks its bands for (0.55: 21 bands x 6 rows)")
    group.add_argument("--num-perm", type=positive_int, default=128, help="near: MinHash permutations (128)")
    group.add_argument("--cosine", type=unit_interval, default=0.9, help="semantic: cosine a pair needs (0.9)")
    group.add_argument("--embedder", help="semantic: sentence-transformers directory, lm:mean, ... (default MiniLM)")
    group.add_argument("--device", help="semantic: cpu, cuda ... (default: cuda if available)")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")


def settings_from_args(args) -> AuditSettings:
    levels = parse_levels(args.levels, "--levels")
    if not levels:
        raise ValueError("--levels: give at least one of exact, near, semantic")
    settings = AuditSettings(levels=levels, dedup_levels=() if args.dedup_text == "off" else levels,
                             text=args.text, dedup_text="conversation" if args.dedup_text == "off" else args.dedup_text,
                             ngram=args.ngram, min_words=args.min_words, shingle=args.shingle, jaccard=args.jaccard,
                             lsh_threshold=args.lsh_threshold, num_perm=args.num_perm, cosine=args.cosine,
                             embedder=args.embedder)
    try:
        settings.check()
    except ValueError as exc:
        raise ValueError(f"--{str(exc).replace('_', '-')}") from None
    return settings


def check_out_dir(out, inputs) -> tuple[Path, dict[str, Path]]:
    """The report directory (not a file) and its three files, none of them an input."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file; give a directory for {', '.join(REPORT_FILES)}")
    paths = {name: check_output(out / name, inputs, what="--out") for name in REPORT_FILES}
    return out, paths


# -- reports -------------------------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def report_markdown(result: AuditResult, data_name: str, dropped: dict | None = None) -> str:
    s = result.settings
    info = summary(result, dropped)
    lines = [f"# Audit of {data_name} ({len(result.pool_ids)} records)", "",
             f"Against the eval sets ({', '.join(f'{k} ({v})' for k, v in result.eval_sizes.items()) or 'none'}): "
             f"levels {', '.join(s.levels) or 'none'}, comparing each pool "
             + ("conversation with each eval conversation." if s.text == "conversation" else
                f"turn's {s.text} with each eval turn's {s.text}.")
             + f" Within the pool: levels {', '.join(s.dedup_levels) or 'none'}, one {s.dedup_text} text per record.",
             "", f"exact: a shared normalised {s.ngram}-word span (an eval text of {s.min_words}..{s.ngram - 1} words: "
             f"the whole text; within the pool: the same normalised text); near: Jaccard >= {s.jaccard} over "
             f"{s.shingle}-word shingles (MinHash LSH, {s.num_perm} permutations, bands for {s.lsh_threshold}); "
             f"semantic: embedding cosine >= {s.cosine}.", "",
             "## Counts", "", "Seconds are per level, for all eval sets together and for the pool.", "",
             "| level | compared with | pool records hit | eval records hit, or duplicate groups | seconds |",
             "|---|---|---|---|---|"]
    for level, per in info["counts"].items():
        first_eval = True
        for name, c in per.items():
            if name == POOL:
                lines.append(f"| {level} | the pool itself | {c['duplicate_records']} | "
                             f"{c['duplicate_groups']} groups | {result.seconds.get(level, {}).get('pool', '')} |")
            else:
                seconds = result.seconds.get(level, {}).get("evals", "") if first_eval else ""
                first_eval = False
                lines.append(f"| {level} | {name} | {c['pool_records']} | {c['eval_records']} | {seconds} |")
    for note in result.notes:
        lines += ["", f"- {note}"]
    for reason, ids in (dropped or {}).items():
        lines += ["", f"Dropped for {reason}: {len(ids)} records" + (f" ({', '.join(ids[:20])}"
                                                                     + (", ..." if len(ids) > 20 else "") + ")"
                                                                     if ids else "")]
    for title, hits in (("Strongest hits against the eval sets", result.eval_hits()),
                        ("Strongest duplicates within the pool", [h for h in result.hits if h.other == POOL])):
        if not hits:
            continue
        strongest = sorted(hits, key=lambda h: (-h.score, LEVELS.index(h.level)))[:SHOWN]
        lines += ["", f"## {title} ({len(strongest)} of {len(hits)})", "",
                  "| level | score | pool id | pool text | other | other text | evidence |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {h.level} | {h.score:.3f} | {_cell(h.pool_id)} | {_cell(h.pool_text)} | "
                  f"{_cell(h.other)}:{_cell(h.other_id)} | {_cell(h.other_text)} | {_cell(h.evidence)} |"
                  for h in strongest]
    return "\n".join(lines) + "\n"


def report_json(result: AuditResult, dropped: dict | None = None) -> dict:
    from dataclasses import asdict

    return {**summary(result, dropped), "hits": [asdict(h) for h in result.hits]}


def write_audit(result: AuditResult, paths: dict[str, Path], data_name: str, dropped: dict | None = None) -> None:
    """report.json (every hit), report.md (counts, strongest hits) and flags.parquet (per record)."""
    text = json.dumps(report_json(result, dropped), indent=2, ensure_ascii=False) + "\n"
    atomic_write(paths["report.json"], lambda handle: handle.write(text.encode("utf-8")))
    markdown = report_markdown(result, data_name, dropped)
    atomic_write(paths["report.md"], lambda handle: handle.write(markdown.encode("utf-8")))
    table = flags_frame(result)
    atomic_write(paths["flags.parquet"], lambda handle: table.to_parquet(handle, index=False))


# -- the command ---------------------------------------------------------------------------------------------
def run(args) -> int:
    from cherrybench.context import Context
    from cherrybench.runners.options import load_data

    settings = settings_from_args(args)
    fail_on = (tuple(lv for lv in settings.levels if lv != "semantic") if args.fail_on is None
               else parse_levels(args.fail_on, "--fail-on"))
    if set(fail_on) - set(settings.levels):
        raise ValueError(f"--fail-on {args.fail_on}: {sorted(set(fail_on) - set(settings.levels))[0]} is not among "
                         f"--levels {args.levels}")
    eval_paths = [spec if Path(spec).exists() else spec.rpartition(":")[2] for spec in args.eval]
    out, paths = check_out_dir(args.out, [args.data, *eval_paths])
    evals = [load_eval_set(spec) for spec in args.eval]
    if not evals and not settings.dedup_levels:
        raise ValueError("nothing to audit: give --eval, or leave --dedup-text on to search the pool for duplicates")
    dataset = load_data(args)
    ctx = Context(device=args.device, progress=not args.no_progress, seed=args.seed)
    result = audit(dataset.records, evals, settings, ctx, use_cache=not args.no_cache)
    write_audit(result, paths, args.data or "the default data sample")
    info = summary(result)
    for level, per in info["counts"].items():
        shown = ", ".join(f"{name} {c['pool_records']}" if name != POOL else f"duplicates {c['duplicate_records']}"
                          for name, c in per.items())
        print(f"{level}: {shown}  ({result.seconds.get(level, {})} s)")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    failing = [level for level in fail_on if result.contaminated([level])]
    if failing:
        print(f"contamination at {', '.join(failing)}: {len(result.contaminated(failing))} pool records repeat "
              "an eval record (--fail-on)", file=sys.stderr)
        return 1
    return 0
