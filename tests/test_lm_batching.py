"""Batch planning in the LM engine: token-budget packing and shared-prefix groups."""

from __future__ import annotations

from cherrybench.lm import MIN_SHARED_PREFIX, pack_batches, prefix_groups


def test_pack_batches_respects_budget_and_covers_everything():
    lengths = [5, 30, 7, 30, 12, 1, 40]
    batches = pack_batches(lengths, 60)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 60
    assert batches[0] == [6]  # longest first; 2 x 40 > 60
    assert pack_batches([100], 10) == [[0]]  # an over-long sequence still runs, alone


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
