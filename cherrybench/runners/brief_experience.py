"""Cherry LLM stage 1 ("brief experience", optional): cluster the pool's
instructions, pick a few mid-perplexity records per cluster, fine-tune one
epoch with the common path, and score IFD with the resulting model. Its
scores are cached under that model's own fingerprint; the pick and the model
are content-keyed artifacts (`cherrybench.store`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from cherrybench.finetune import TrainConfig, finetuned_model
from cherrybench.models import precision_entry
from cherrybench.prompts import context_pieces
from cherrybench.records import Dataset, Record, Turn
from cherrybench.store import ArtifactStore


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


PICKS = ArtifactStore("brief_experience")  # which records each pool's brief experience trains on
PICK_VERSION = 1


def brief_experience_model(pool: Dataset, train: TrainConfig, ctx, clusters: int = 100, per_cluster: int = 10) -> Path:
    """The briefly trained model's directory (trained once, then reused). The pick
    (clusters, mid-perplexity records) is stored by content, keyed by the pool's
    record hashes, the scoring model and the settings, so a rerun skips it; the
    model comes from the common content-keyed fine-tune store."""
    config = replace(train, epochs=1.0)
    scorer = ctx.model_ref(train.model).fingerprint  # the model ctx.lm(train.model) embeds and scores with
    payload = {"artifact": "brief_experience_pick", "version": PICK_VERSION, "model": scorer,
               "prompt": train.prompt, "max_length": train.max_length, "seed": train.seed, "clusters": clusters,
               "per_cluster": per_cluster, "pool": [r.content_hash for r in pool.records],
               **precision_entry(ctx.precision())}  # bf16 hidden states and perplexities can pick other records
    picked = PICKS.get_json(payload)
    if picked is None:
        picked = _pick(pool, train, ctx, clusters, per_cluster)
        PICKS.put_json(payload, picked)
    records = [pool.records[i] for i in picked]
    return finetuned_model(records, config, progress=ctx.progress, ctx=ctx)


def _pick(pool: Dataset, train: TrainConfig, ctx, clusters: int, per_cluster: int) -> list[int]:
    """Cluster the instructions, then pick mid-perplexity records per cluster (positions in the pool)."""
    from sklearn.cluster import KMeans

    from cherrybench.metrics.ifd import InstructionPPL
    from cherrybench.scoring import score

    lm = ctx.lm(train.model)
    embeddings = instruction_embeddings(pool.records, lm, train.prompt, train.max_length)
    k = min(clusters, len(pool.records))
    labels = KMeans(n_clusters=k, random_state=train.seed, n_init=10).fit_predict(embeddings)
    ppl = score(pool, [InstructionPPL(model=train.model, max_length=train.max_length)], ctx)["instruction_ppl"]
    return [int(i) for i in pick_per_cluster(labels, ppl.to_numpy(float), per_cluster)]
