"""Batch planning in the LM engine: token-budget packing and shared-prefix groups."""

from __future__ import annotations

from cherrybench.lm import MIN_SHARED_PREFIX, attention_kernel, pack_batches, pack_rows, prefix_groups


def test_pack_batches_respects_budget_and_covers_everything():
    lengths = [5, 30, 7, 30, 12, 1, 40]
    batches = pack_batches(lengths, 60)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 60
    assert batches[0] == [6]  # longest first; 2 x 40 > 60
    assert pack_batches([100], 10) == [[0]]  # an over-long sequence still runs, alone


def test_pack_rows_lays_sequences_end_to_end_under_the_budget():
    lengths = [5, 30, 7, 30, 12, 1, 40]
    rows = pack_rows(lengths, 60)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))  # each sequence exactly once
    assert all(len(r) == 1 or sum(lengths[i] for i in r) <= 60 for r in rows)
    # longest first, each row filled in that order until the next would not fit: by hand
    assert rows == [[6], [1, 3], [4, 2, 0, 5]]
    assert pack_rows([100, 3], 10) == [[0], [1]]  # an over-long sequence still runs, alone


def test_flash_attention_is_asked_for_on_cuda_only():
    assert attention_kernel("cpu") is None  # transformers' default (sdpa): rows stay padded


def test_prefix_groups_share_only_what_every_member_may_skip():
    p = list(range(100, 100 + MIN_SHARED_PREFIX + 4))  # a 20-token template
    a, b, c = p + [1, 2, 3], p + [1, 2, 9, 9], p[:-1] + [7, 7]
    d = [5] * 30  # no partner
    groups, rest = prefix_groups([a, b, c, d], first_needed=[22, 22, 20, 3])
    assert groups == [(19, [0, 1, 2])]  # common prefix of a, b, c is p[:-1]
    assert rest == [3]
    # a member that needs an early position caps the shared length below the minimum: no group
    groups, rest = prefix_groups([a, b], first_needed=[10, 22])
    assert groups == [] and rest == [0, 1]
    # every member keeps at least one token of its own
    groups, _ = prefix_groups([p, p + [1]], first_needed=[99, 99])
    assert groups == [(len(p) - 1, [0, 1])]
