"""Cherry LLM stage 1 ("brief experience", optional): cluster the pool's
instructions, pick a few mid-perplexity records per cluster, fine-tune one
epoch with the common path, and score IFD with the resulting model. Its
scores are cached under that model's own fingerprint."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from cherrybench.fingerprint import hash_json
from cherrybench.paths import cache_dir
from cherrybench.prompts import context_pieces
from cherrybench.records import Dataset, Record, Turn
from cherrybench.finetune import TrainConfig, finetune


def instruction_embeddings(records: list[Record], lm, prompt: str, max_length: int) -> np.ndarray:
    """Mean of the scoring model's last hidden states over each record's prompt tokens."""
    sequences = []
    for record in records:
        first = Record(record.id, [Turn(record.turns[0].instruction, "", record.turns[0].input)])
        sequences.append(lm.encode(context_pieces(first, prompt, lm.tokenizer)[0])[:max_length] or [lm.pad_id])
    return lm.pooled_hidden(sequences, pooling="mean")


def pick_per_cluster(labels: np.ndarray, perplexity: np.ndarray, per_cluster: int) -> list[int]:
    """Inside each cluster, the records whose instruction perplexity lies between
    its 25th and 75th percentile, `per_cluster` of them evenly spaced by perplexity."""
    chosen: list[int] = []
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        ppl = perplexity[members]
        finite = np.isfinite(ppl)
        members, ppl = members[finite], ppl[finite]
        if len(members) == 0:
            continue
        low, high = np.percentile(ppl, [25, 75])
        middle = members[(ppl >= low) & (ppl <= high)]
        middle = middle[np.argsort(perplexity[middle], kind="stable")]
        if len(middle) <= per_cluster:
            chosen.extend(middle.tolist())
        else:
            spots = np.linspace(0, len(middle) - 1, per_cluster).round().astype(int)
            chosen.extend(middle[np.unique(spots)].tolist())
    return sorted(chosen)


def brief_experience_model(pool: Dataset, train: TrainConfig, ctx, clusters: int = 100, per_cluster: int = 10) -> Path:
    """The briefly trained model's directory (trained once, then reused)."""
    from sklearn.cluster import KMeans

    from cherrybench.metrics.ifd import InstructionPPL
    from cherrybench.scoring import score

    lm = ctx.lm(train.model)
    embeddings = instruction_embeddings(pool.records, lm, train.prompt, train.max_length)
    k = min(clusters, len(pool.records))
    labels = KMeans(n_clusters=k, random_state=train.seed, n_init=10).fit_predict(embeddings)
    ppl = score(pool, [InstructionPPL(model=train.model, max_length=train.max_length)], ctx)["instruction_ppl"]
    picked = pick_per_cluster(labels, ppl.to_numpy(float), per_cluster)
    records = [pool.records[i] for i in picked]
    config = replace(train, epochs=1.0)
    key = hash_json([config.fingerprint(lm.fingerprint), [r.content_hash for r in records]])[:24]
    return finetune(records, config, cache_dir() / "brief_experience" / key, progress=ctx.progress)
