"""Contamination and duplicate audit: which pool records repeat an eval record
(contamination), and which repeat an earlier pool record (duplicates), at three
levels:

- exact: a shared normalised word n-gram (13; NFC, case-folded, every run of
  characters that are not letters, digits or marks one space). An eval text
  shorter than n words, but of at least `min_words`, matches where it appears
  whole (ours). Evidence: the longest shared span; score: its length over the
  shorter text's. Within the pool, exact means the same normalised text (ours:
  training texts share boilerplate 13-grams without being the same record).
- near: MinHash LSH (`datasketch`) over word shingles (5; a shorter text is one
  shingle), every candidate verified by its exact Jaccard >= `jaccard`. The LSH
  bands are datasketch's choice for `lsh_threshold` (0.55, ours: 21 bands of 6
  rows at 128 permutations, so a pair at Jaccard 0.8 becomes a candidate with
  probability 0.998).
- semantic: cosine >= `cosine` between sentence embeddings (`cherrybench.embedders`,
  MiniLM by default), exact nearest neighbours by matrix products in blocks.

What is compared is a setting. Against eval sets (`text`): each turn's question
with its input (default: a leaked eval question is caught in any turn), each
turn's answer, or the whole conversation. Within the pool (`dedup_text`): one
text per record, all its questions, all its answers or the conversation
(default), since a duplicate is the same record, not a shared turn.
"""

from __future__ import annotations

import hashlib
import logging
import time
import unicodedata
from dataclasses import asdict, dataclass, field

import numpy as np
import regex

from cherrybench.eval_sets import EvalSet
from cherrybench.fingerprint import hash_json
from cherrybench.records import Record

log = logging.getLogger(__name__)

LEVELS = ("exact", "near", "semantic")
TEXTS = ("question", "answer", "conversation")
POOL = "pool"  # the `other` of a hit between two pool records
TEXT_LIMIT = 300  # characters of a text kept as evidence
MAX_GRAM = 256
_MULTIPLIERS = np.random.default_rng(13).integers(0, 2 ** 63, size=MAX_GRAM, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
_SEPARATORS = regex.compile(r"[^\p{L}\p{N}\p{M}]+")


# -- text ----------------------------------------------------------------------------------------------------
def normalize(text: str) -> str:
    """NFC, case-folded, every run of characters that are not letters, digits or marks one space."""
    folded = unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())
    return _SEPARATORS.sub(" ", folded).strip()


def words(text: str) -> list[str]:
    return normalize(text).split()


def record_texts(record: Record, text: str, per_turn: bool) -> list[tuple[int, str]]:
    """(turn, text) pairs compared for a record: per turn, or one text for the record (turn -1)."""
    if text == "conversation":
        return [(-1, "\n\n".join(f"{t.query}\n{t.output}" for t in record.turns))]
    if text not in TEXTS:
        raise ValueError(f"text must be one of {', '.join(TEXTS)}, got {text!r}")
    pieces = [t.query if text == "question" else t.output for t in record.turns]
    return list(enumerate(pieces)) if per_turn else [(-1, "\n\n".join(p for p in pieces if p))]


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


@dataclass
class _Unit:
    """One compared text: its record (index), turn, text, words and word hashes."""

    owner: int
    turn: int
    text: str
    tokens: list[str]
    hashes: np.ndarray


class _WordHasher:
    """A stable 64-bit hash per distinct word (blake2b), so n-gram hashes depend on content only."""

    def __init__(self):
        self.known: dict[str, int] = {}

    def __call__(self, tokens: list[str]) -> np.ndarray:
        out = np.empty(len(tokens), dtype=np.uint64)
        for i, token in enumerate(tokens):
            value = self.known.get(token)
            if value is None:
                value = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")
                self.known[token] = value
            out[i] = value
        return out


def _units(records: list[Record], text: str, per_turn: bool, hasher: _WordHasher) -> list[_Unit]:
    units = []
    for index, record in enumerate(records):
        for turn, piece in record_texts(record, text, per_turn):
            tokens = words(piece)
            if tokens:  # an empty text (a prompt-only eval set's answer) has nothing to compare
                units.append(_Unit(index, turn, piece, tokens, hasher(tokens)))
    return units


def gram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """A 64-bit hash of each window of n word hashes (a fixed odd multiplier per position, mod 2**64)."""
    m = len(hashes) - n + 1
    out = np.zeros(max(m, 0), dtype=np.uint64)
    for j in range(n if m > 0 else 0):
        out += hashes[j: j + m] * _MULTIPLIERS[j]
    return out


def shingles(hashes: np.ndarray, k: int) -> np.ndarray:
    """Sorted distinct hashes of the k-word shingles; a text shorter than k words is one shingle."""
    return np.unique(gram_hashes(hashes, min(k, len(hashes))))


# -- settings and results ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditSettings:
    levels: tuple = LEVELS  # against the eval sets
    dedup_levels: tuple = LEVELS  # within the pool; () for none
    text: str = "question"  # compared against eval sets, per turn unless "conversation"
    dedup_text: str = "conversation"  # compared within the pool, one text per record
    ngram: int = 13
    min_words: int = 8
    shingle: int = 5
    jaccard: float = 0.8
    lsh_threshold: float = 0.55
    num_perm: int = 128
    cosine: float = 0.9
    embedder: str | None = None
    block: int = 1024  # rows per block of the cosine matrix products

    def check(self) -> None:
        """A ValueError naming the setting for a value that cannot work."""
        for name in ("levels", "dedup_levels"):
            unknown = [lv for lv in getattr(self, name) if lv not in LEVELS]
            if unknown:
                raise ValueError(f"{name}: unknown level {unknown[0]!r}; choose from {', '.join(LEVELS)}")
        for name in ("text", "dedup_text"):
            if getattr(self, name) not in TEXTS:
                raise ValueError(f"{name} must be one of {', '.join(TEXTS)}, got {getattr(self, name)!r}")
        for name in ("ngram", "shingle", "min_words"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= MAX_GRAM:
                raise ValueError(f"{name} must be an integer in 1..{MAX_GRAM}, got {value!r}")
        for name in ("jaccard", "lsh_threshold", "cosine"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} must lie in (0, 1], got {value!r}")
        if self.lsh_threshold > self.jaccard:
            raise ValueError(f"lsh_threshold {self.lsh_threshold} above jaccard {self.jaccard}: pairs between "
                             "the two would rarely become candidates; lower lsh_threshold")
        if not isinstance(self.num_perm, int) or self.num_perm < 16:
            raise ValueError(f"num_perm must be an integer >= 16, got {self.num_perm!r}")

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k != "block"}

    @property
    def key(self) -> str:
        return hash_json(self.as_dict())


@dataclass
class Hit:
    """A pool record that repeats an eval record (`other` is the eval set) or an earlier
    pool record (`other` is "pool"): the best match of the pair at one level."""

    level: str
    pool_id: str
    other: str
    other_id: str
    score: float
    evidence: str
    pool_text: str
    other_text: str
    pool_turn: int = -1
    other_turn: int = -1


@dataclass
class AuditResult:
    settings: AuditSettings
    pool_ids: list[str]
    eval_sizes: dict  # eval set name -> records
    hits: list[Hit]
    seconds: dict = field(default_factory=dict)  # level -> {"evals": s, "pool": s}
    notes: list = field(default_factory=list)

    def eval_hits(self, levels=None) -> list[Hit]:
        return [h for h in self.hits if h.other != POOL and (levels is None or h.level in levels)]

    def contaminated(self, levels=None) -> list[str]:
        """Pool ids with a hit against an eval set at any of `levels` (all: None), in pool order."""
        found = {h.pool_id for h in self.eval_hits(levels)}
        return [i for i in self.pool_ids if i in found]

    def duplicate_groups(self, level: str, exclude=()) -> list[list[str]]:
        """Groups of pool records that duplicate each other at `level` (connected pairs), among
        the records not in `exclude`; each in pool order, groups ordered by their first record."""
        position = {rid: i for i, rid in enumerate(self.pool_ids)}
        excluded = set(exclude)
        parent = list(range(len(self.pool_ids)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for hit in self.hits:
            if hit.other == POOL and hit.level == level and not {hit.pool_id, hit.other_id} & excluded:
                a, b = root(position[hit.pool_id]), root(position[hit.other_id])
                parent[max(a, b)] = min(a, b)
        groups: dict[int, list[str]] = {}
        for i, rid in enumerate(self.pool_ids):
            if rid not in excluded:
                groups.setdefault(root(i), []).append(rid)
        return [g for _, g in sorted(groups.items()) if len(g) > 1]

    def duplicates_to_drop(self, level: str, exclude=()) -> list[str]:
        """Every record of a duplicate group but its first, in pool order."""
        drop = {rid for group in self.duplicate_groups(level, exclude) for rid in group[1:]}
        return [i for i in self.pool_ids if i in drop]


# -- the levels ----------------------------------------------------------------------------------------------
def _longest_span(matches: list[tuple[int, int]], n: int) -> tuple[int, int, int]:
    """(span, pool position, eval position) of the longest run of n-gram matches on one diagonal."""
    best = (0, 0, 0)
    runs: dict[int, tuple[int, int, int]] = {}  # diagonal -> (start ppos, start epos, last ppos)
    for ppos, epos in sorted(matches, key=lambda m: (m[0] - m[1], m[0])):
        diag = ppos - epos
        start = runs.get(diag)
        if start is not None and start[2] == ppos - 1:
            runs[diag] = (start[0], start[1], ppos)
        else:
            runs[diag] = (ppos, epos, ppos)
        span = runs[diag][2] - runs[diag][0] + n
        if span > best[0]:
            best = (span, runs[diag][0], runs[diag][1])
    return best


def _exact_vs_evals(pool: list[_Unit], evals: list[_Unit], s: AuditSettings):
    """(pool unit, eval unit, score, evidence) for every pair sharing an n-gram, or where a
    short eval text (min_words <= words < ngram) appears whole in the pool text."""
    index: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (gram size, hash) -> [(eval unit, position)]
    for k, unit in enumerate(evals):
        size = s.ngram if len(unit.tokens) >= s.ngram else len(unit.tokens)
        if size < s.min_words and size < s.ngram:
            continue
        for pos, g in enumerate(gram_hashes(unit.hashes, size).tolist()):
            index.setdefault((size, g), []).append((k, pos))
    sizes = sorted({size for size, _ in index})
    keys = {size: {g for z, g in index if z == size} for size in sizes}
    for i, unit in enumerate(pool):
        matches: dict[int, list[tuple[int, int]]] = {}
        for size in sizes:
            grams = gram_hashes(unit.hashes, size).tolist()
            for ppos in (p for p, g in enumerate(grams) if g in keys[size]):
                for k, epos in index[(size, grams[ppos])]:
                    matches.setdefault(k, []).append((ppos, epos))
        for k, found in matches.items():
            other = evals[k]
            n = min(s.ngram, len(other.tokens))
            span, ppos, epos = _longest_span(found, n)
            shared = unit.tokens[ppos: ppos + span]
            if shared != other.tokens[epos: epos + span]:
                continue  # a hash collision, not a shared span
            score = span / min(len(unit.tokens), len(other.tokens))
            yield i, k, min(score, 1.0), _cut(" ".join(shared))


def _exact_within(pool: list[_Unit]):
    """(earlier unit, later unit, 1.0, evidence) for units with the same normalised text."""
    first: dict[str, int] = {}
    for i, unit in enumerate(pool):
        key = " ".join(unit.tokens)
        if key in first:
            yield first[key], i, 1.0, "same normalised text"
        else:
            first[key] = i


def minhashes(shingle_sets: list[np.ndarray], num_perm: int) -> list:
    """One datasketch MinHash per shingle set (hashes fed as their low 32 bits)."""
    from datasketch import MinHash

    low = [(s & np.uint64(0xFFFFFFFF)).astype(np.uint32) for s in shingle_sets]
    return list(MinHash.generator(low, num_perm=num_perm, hashfunc=int))


def candidate_pairs(query: list, indexed: list | None, settings: AuditSettings) -> set[tuple[int, int]]:
    """MinHash LSH candidates (query index, indexed index); within one list (indexed None)
    each pair once, as (earlier, later)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=settings.lsh_threshold, num_perm=settings.num_perm)
    for j, m in enumerate(query if indexed is None else indexed):
        lsh.insert(j, m)
    pairs = set()
    for i, m in enumerate(query):
        for j in lsh.query(m):
            if indexed is not None:
                pairs.add((i, j))
            elif j < i:
                pairs.add((j, i))
    return pairs


def jaccard(a: np.ndarray, b: np.ndarray) -> tuple[float, int, int]:
    """(Jaccard, shared, union) of two sorted distinct hash arrays."""
    shared = len(np.intersect1d(a, b, assume_unique=True))
    union = len(a) + len(b) - shared
    return (shared / union if union else 0.0), shared, union


def _near(query: list[_Unit], indexed: list[_Unit] | None, s: AuditSettings):
    """(query or earlier unit, indexed or later unit, Jaccard, evidence) for verified candidates."""
    q_sets = [shingles(u.hashes, s.shingle) for u in query]
    i_sets = q_sets if indexed is None else [shingles(u.hashes, s.shingle) for u in indexed]
    q_hashes = minhashes(q_sets, s.num_perm)
    i_hashes = None if indexed is None else minhashes(i_sets, s.num_perm)
    for a, b in sorted(candidate_pairs(q_hashes, i_hashes, s)):
        left, right = (q_sets[a], i_sets[b])
        value, shared, union = jaccard(left, right)
        if value >= s.jaccard:
            yield a, b, value, f"{shared} of {union} {s.shingle}-word shingles shared"


def cosine_pairs(a: np.ndarray, b: np.ndarray | None, threshold: float, block: int = 1024):
    """(i, j, cosine) with cosine >= threshold between rows of a and b (within a when b is None:
    i < j), exactly, by matrix products over blocks of rows."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    other = a if b is None else b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    for start in range(0, len(a), block):
        sims = a[start: start + block] @ other.T
        if b is None:  # j > i: each pair once, never a row with itself
            sims[np.arange(len(sims))[:, None] + start >= np.arange(len(other))[None, :]] = -np.inf
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            yield start + r, c, float(sims[r, c])


def _semantic(query: list[_Unit], indexed: list[_Unit] | None, s: AuditSettings, ctx, use_cache: bool):
    from cherrybench.embedders import embed_texts

    texts = [u.text for u in query] + ([] if indexed is None else [u.text for u in indexed])
    vectors = embed_texts(texts, s.embedder, ctx, use_cache=use_cache, label="audit")
    a, b = vectors[: len(query)], (None if indexed is None else vectors[len(query):])
    for i, j, value in cosine_pairs(a, b, s.cosine, s.block):
        yield i, j, min(value, 1.0), "cosine of sentence embeddings"


# -- the audit -----------------------------------------------------------------------------------------------
def audit(pool: list[Record], evals: list[EvalSet], settings: AuditSettings = AuditSettings(), ctx=None,
          use_cache: bool = True) -> AuditResult:
    """Every hit of `pool` against each eval set at `settings.levels`, and between pool
    records at `settings.dedup_levels`; per record pair and level, the best match."""
    settings.check()
    names = [e.name for e in evals]
    repeated = sorted({n for n in names if names.count(n) > 1} | ({POOL} & set(names)))
    if repeated:
        raise ValueError(f"eval set name {repeated[0]!r} is used twice or reserved; give each --eval its own NAME:")
    hasher = _WordHasher()
    pool_ids = [r.id for r in pool]
    best: dict[tuple, Hit] = {}
    seconds: dict[str, dict] = {}
    notes = []

    def keep(level: str, units_a: list[_Unit], units_b: list[_Unit], others: list[tuple[str, Record]], pairs):
        for a, b, score, evidence in pairs:
            ua, ub = units_a[a], units_b[b]
            if others is within_others:  # the later record duplicates the earlier one
                ua, ub = (ua, ub) if ua.owner > ub.owner else (ub, ua)
                if ua.owner == ub.owner:
                    continue
            other, record = others[ub.owner]
            hit = Hit(level, pool[ua.owner].id, other, record.id, round(float(score), 6), evidence,
                      _cut(ua.text), _cut(ub.text), ua.turn, ub.turn)
            key = (level, hit.pool_id, other, hit.other_id)
            if key not in best or hit.score > best[key].score:
                best[key] = hit

    per_turn = settings.text != "conversation"
    eval_others = [(e.name, r) for e in evals for r in e.records]  # every eval record, tagged with its set
    pool_units = _units(pool, settings.text, per_turn, hasher) if settings.levels and evals else []
    eval_units = _units([r for _, r in eval_others], settings.text, per_turn, hasher) if pool_units else []
    for e in evals:
        if pool_units and not any(eval_others[u.owner][0] == e.name for u in eval_units):
            notes.append(f"{e.name}: no {settings.text} text to compare (a prompt-only set has no answers)")
    within_others = [(POOL, r) for r in pool]
    within = _units(pool, settings.dedup_text, False, hasher) if settings.dedup_levels else []
    for level in LEVELS:
        if level in settings.levels and pool_units and eval_units:
            started = time.perf_counter()
            pairs = (_exact_vs_evals(pool_units, eval_units, settings) if level == "exact"
                     else _near(pool_units, eval_units, settings) if level == "near"
                     else _semantic(pool_units, eval_units, settings, ctx, use_cache))
            keep(level, pool_units, eval_units, eval_others, pairs)
            seconds.setdefault(level, {})["evals"] = round(time.perf_counter() - started, 3)
        if level in settings.dedup_levels and len(within) > 1:
            started = time.perf_counter()
            pairs = (_exact_within(within) if level == "exact" else _near(within, None, settings) if level == "near"
                     else _semantic(within, None, settings, ctx, use_cache))
            keep(level, within, within, within_others, pairs)
            seconds.setdefault(level, {})["pool"] = round(time.perf_counter() - started, 3)
        if level in seconds:
            log.info("audit %s: %s seconds", level, seconds[level])
    order = {rid: i for i, rid in enumerate(pool_ids)}
    hits = sorted(best.values(), key=lambda h: (LEVELS.index(h.level), h.other == POOL, order[h.pool_id],
                                                h.other, h.other_id))
    return AuditResult(settings, pool_ids, {e.name: len(e.records) for e in evals}, hits, seconds, notes)


def summary(result: AuditResult, dropped: dict | None = None) -> dict:
    """A JSON-able account of an audit (the manifest's `audit` field, MLflow, reports): settings,
    sizes, per level and eval set the pool and eval records hit, duplicate groups per level, and
    the ids dropped for each reason (`dropped`: reason -> ids, as the caller applied them)."""
    counts: dict[str, dict] = {}
    for level in LEVELS:
        per: dict[str, dict] = {}
        for name in result.eval_sizes:
            hits = [h for h in result.hits if h.level == level and h.other == name]
            if level in result.settings.levels:
                per[name] = {"pool_records": len({h.pool_id for h in hits}),
                             "eval_records": len({h.other_id for h in hits})}
        if level in result.settings.dedup_levels:
            groups = result.duplicate_groups(level)
            per[POOL] = {"duplicate_groups": len(groups), "duplicate_records": sum(len(g) - 1 for g in groups)}
        if per:
            counts[level] = per
    return {"settings": result.settings.as_dict(), "settings_key": result.settings.key,
            "pool_records": len(result.pool_ids), "eval_sets": dict(result.eval_sizes),
            "counts": counts, "contaminated_records": {lv: len(result.contaminated([lv])) for lv in result.settings.levels},
            "seconds": result.seconds, "notes": list(result.notes),
            "dropped": {reason: list(ids) for reason, ids in (dropped or {}).items()}}


def flags_frame(result: AuditResult):
    """One row per pool record (keyed by `id`, pool order): per eval level whether it is
    contaminated and by which `set:id`, per pool level the id of the first record of its
    duplicate group (None when it is none's duplicate or the first)."""
    import pandas as pd

    table = pd.DataFrame({"id": result.pool_ids})
    for level in result.settings.levels:
        by: dict[str, list[str]] = {}
        for h in result.eval_hits([level]):
            by.setdefault(h.pool_id, []).append(f"{h.other}:{h.other_id}")
        table[f"contaminated_{level}"] = [rid in by for rid in result.pool_ids]
        table[f"contaminated_{level}_by"] = [",".join(by[rid]) if rid in by else None for rid in result.pool_ids]
    for level in result.settings.dedup_levels:
        first = {rid: group[0] for group in result.duplicate_groups(level) for rid in group[1:]}
        table[f"duplicate_of_{level}"] = [first.get(rid) for rid in result.pool_ids]
    return table
