"""What a score-cache shard gives back equals what was written: text columns (NaN
reasons, generated text) as Python objects with None, not pandas' string dtype with NaN."""

from __future__ import annotations

import math

import pandas as pd

from cherrybench.cache import ShardStore
from cherrybench.fingerprint import RECORD_HASH_COLUMN


def test_text_columns_round_trip_with_none_for_missing():
    store = ShardStore("scores", "probe", "k" * 32, {"probe": True})
    texts = {"probe_reason": [None, "empty_answer", None], "probe_text": ["[tag]", None, "x"]}
    written = pd.DataFrame({RECORD_HASH_COLUMN: ["h1", "h2", "h3"], "probe": [1.5, math.nan, 2.0],
                            **{c: pd.Series(v, dtype=object) for c, v in texts.items()}})
    store.append(written)
    loaded = store.load()
    assert list(loaded.index) == ["h1", "h2", "h3"]
    for column in ("probe_reason", "probe_text"):
        assert loaded[column].dtype == object
        assert loaded[column].tolist() == texts[column]  # None stays None, never NaN
    assert loaded["probe"].tolist()[0] == 1.5 and math.isnan(loaded["probe"].tolist()[1])
