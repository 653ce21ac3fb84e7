"""The one causal-LM backend every model-backed metric shares.

Its batch methods take token id sequences, sort them by length, pack them into
batches under a token budget (right padding, attention masks), and apply the LM
head only to the rows whose output is needed: per-token losses (cas, das, ppl,
eval loss), next-token logits for a few candidate tokens (judges), pooled
hidden states (embeddings) and greedy generation.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from cherrybench.models import ModelRef, pick_device, pick_dtype, resolve_model

HEAD_CHUNK_ROWS = 1024  # LM-head rows at a time: bounds the [rows, vocab] logits buffer


def default_batch_tokens(device: str) -> int:
    # measured: on a 2-core CPU small batches are fastest per token (cache-resident activations)
    return 65536 if device.startswith("cuda") else 512


def pack_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices sorted longest first (ties by index), packed so that
    batch size x longest length <= batch_tokens (at least one sequence a batch)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches, current, longest = [], [], 0
    for i in order:
        width = max(longest, lengths[i])
        if current and (len(current) + 1) * width > batch_tokens:
            batches.append(current)
            current, width = [], lengths[i]
        current.append(i)
        longest = width
    if current:
        batches.append(current)
    return batches


MIN_SHARED_PREFIX = 16  # tokens; shorter shared prefixes are not worth a cache


def prefix_groups(sequences: list[list[int]], first_needed: list[int]) -> tuple[list[tuple[int, list[int]]], list[int]]:
    """Group sequences that start with the same MIN_SHARED_PREFIX tokens; each
    group's shared length is their longest common prefix, cut so that every
    member keeps at least one token and every position it needs after it.
    Returns [(length, members)] and the indices left to run whole."""
    buckets: dict[tuple, list[int]] = {}
    rest: list[int] = []
    for i, seq in enumerate(sequences):
        if len(seq) > MIN_SHARED_PREFIX:
            buckets.setdefault(tuple(seq[:MIN_SHARED_PREFIX]), []).append(i)
        else:
            rest.append(i)
    groups = []
    for members in buckets.values():
        first = sequences[members[0]]
        length = min(min(len(sequences[i]) - 1, first_needed[i]) for i in members)
        for i in members[1:]:
            seq = sequences[i]
            n = 0
            while n < length and seq[n] == first[n]:
                n += 1
            length = n
        if len(members) >= 2 and length >= MIN_SHARED_PREFIX:
            groups.append((length, members))
        else:
            rest.extend(members)
    return groups, sorted(rest)


class LanguageModel:
    """A loaded causal LM with batched scoring methods. `forward_calls` counts
    batches run through the network (tests use it to prove cache reuse)."""

    def __init__(self, model: str | ModelRef | None = None, device: str | None = None,
                 batch_tokens: int | None = None, trust_remote_code: bool = False):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.ref = model if isinstance(model, ModelRef) else resolve_model(model)
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.ref.directory, trust_remote_code=trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(
            self.ref.directory, dtype=self.dtype, trust_remote_code=trust_remote_code
        ).to(self.device)
        self.model.eval()
        self.base = getattr(self.model, self.model.base_model_prefix)
        self.head = self.model.get_output_embeddings()
        self.softcap = getattr(self.model.config, "final_logit_softcapping", None)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        self.batch_tokens = batch_tokens or default_batch_tokens(self.device)
        self.forward_calls = 0
        self._torch = torch

    @property
    def fingerprint(self) -> str:
        return self.ref.fingerprint

    @property
    def max_positions(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    def encode(self, text: str) -> list[int]:
        """Token ids with no special tokens added (SPEC: prompt and answer tokenized separately)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    # -- internals ---------------------------------------------------------
    def _hidden(self, batch: list[list[int]], prefix=None):
        """Last hidden states of right-padded `batch`; with prefix=(length, cache)
        the rows continue a shared, already computed prefix."""
        import copy

        torch = self._torch
        width = max(len(s) for s in batch)
        start = prefix[0] if prefix else 0
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), start + width), dtype=torch.long)
        mask[:, :start] = 1
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, start: start + len(seq)] = 1
        self.forward_calls += 1
        kwargs = {}
        if prefix:
            cache = copy.deepcopy(prefix[1])
            cache.batch_repeat_interleave(len(batch))
            positions = torch.arange(start, start + width, device=self.device).expand(len(batch), width)
            kwargs = {"past_key_values": cache, "position_ids": positions, "use_cache": True}
        out = self.base(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)
        return out.last_hidden_state

    def _logits(self, rows):
        logits = self.head(rows).float()
        if self.softcap:
            logits = self.softcap * self._torch.tanh(logits / self.softcap)
        return logits

    def _run(self, sequences, per_batch: Callable, on_progress: Callable[[int], None] | None,
             first_needed: list[int] | None = None):
        """Feed `sequences` through the body in length-sorted batches, calling
        per_batch(indices, hidden, offset) where hidden[row, p - offset] is the
        state at position p. With `first_needed` (the first position whose state
        each sequence needs), sequences sharing a long prefix (a prompt
        template) reuse one KV cache of it instead of recomputing it per record."""
        groups, rest = prefix_groups(sequences, first_needed) if first_needed is not None else ([], None)
        rest = list(range(len(sequences))) if rest is None else rest
        with self._torch.inference_mode():
            for batch in pack_batches([len(sequences[i]) for i in rest], self.batch_tokens):
                batch = [rest[i] for i in batch]
                per_batch(batch, self._hidden([sequences[i] for i in batch]), 0)
                if on_progress:
                    on_progress(len(batch))
            for length, members in groups:
                prefix = self._prefix_cache(sequences[members[0]][:length])
                suffixes = [sequences[i][length:] for i in members]
                for batch in pack_batches([len(s) for s in suffixes], self.batch_tokens):
                    hidden = self._hidden([suffixes[i] for i in batch], prefix=(length, prefix))
                    per_batch([members[i] for i in batch], hidden, length)
                    if on_progress:
                        on_progress(len(batch))

    def _prefix_cache(self, prefix: list[int]):
        self.forward_calls += 1
        ids = self._torch.tensor([prefix], dtype=self._torch.long, device=self.device)
        return self.base(input_ids=ids, use_cache=True).past_key_values

    # -- batch methods -----------------------------------------------------
    def token_losses(self, sequences: list[list[int]], targets: list[list[int]],
                     on_progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
        """Cross-entropy of token seq[p] given seq[:p], for each p in targets[i] (p >= 1)."""
        torch = self._torch
        results: list[np.ndarray] = [np.zeros(0, dtype=np.float64) for _ in sequences]
        work = [i for i, t in enumerate(targets) if len(t)]
        for i in work:
            if min(targets[i]) < 1 or max(targets[i]) >= len(sequences[i]):
                raise ValueError(f"sequence {i}: target positions must lie in 1..{len(sequences[i]) - 1}")

        def per_batch(batch, hidden, offset):
            rows, labels, owners = [], [], []
            for row, local in enumerate(batch):
                i = work[local]
                pos = torch.tensor(targets[i], dtype=torch.long)
                rows.append(hidden[row, pos - 1 - offset])
                labels.append(torch.tensor([sequences[i][p] for p in targets[i]], dtype=torch.long))
                owners.append((i, len(targets[i])))
            rows = torch.cat(rows)
            labels = torch.cat(labels).to(rows.device)
            losses = []
            for start in range(0, rows.shape[0], HEAD_CHUNK_ROWS):
                logits = self._logits(rows[start: start + HEAD_CHUNK_ROWS])
                lab = labels[start: start + HEAD_CHUNK_ROWS]
                losses.append(torch.logsumexp(logits, dim=-1) - logits.gather(1, lab[:, None])[:, 0])
            flat = torch.cat(losses).double().cpu().numpy()
            offset = 0
            for i, n in owners:
                results[i] = flat[offset: offset + n]
                offset += n

        self._run([sequences[i] for i in work], per_batch, on_progress,
                  first_needed=[min(targets[i]) - 1 for i in work])
        return results

    def last_token_logits(self, sequences: list[list[int]], token_ids: list[int],
                          on_progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Logits of `token_ids` at the position after each sequence's last token: [n, len(token_ids)]."""
        torch = self._torch
        out = np.zeros((len(sequences), len(token_ids)), dtype=np.float64)
        weight = self.head.weight[torch.tensor(token_ids, device=self.head.weight.device)]
        bias = self.head.bias[torch.tensor(token_ids, device=self.head.weight.device)] if self.head.bias is not None else None

        def per_batch(batch, hidden, offset):
            last = torch.tensor([len(sequences[i]) - 1 - offset for i in batch], device=hidden.device)
            rows = hidden[torch.arange(len(batch), device=hidden.device), last]
            logits = (rows @ weight.T).float()
            if bias is not None:
                logits = logits + bias.float()
            if self.softcap:
                logits = self.softcap * torch.tanh(logits / self.softcap)
            out[batch] = logits.double().cpu().numpy()

        self._run(sequences, per_batch, on_progress, first_needed=[len(seq) - 1 for seq in sequences])
        return out

    def pooled_hidden(self, sequences: list[list[int]], pooling: str = "mean",
                      on_progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Last-layer hidden states pooled over each sequence ('mean' or 'last'): [n, hidden]."""
        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
        out = np.zeros((len(sequences), self.model.config.hidden_size), dtype=np.float32)

        def per_batch(batch, hidden, offset):
            for row, i in enumerate(batch):
                n = len(sequences[i])
                vec = hidden[row, :n].float().mean(0) if pooling == "mean" else hidden[row, n - 1].float()
                out[i] = vec.cpu().numpy()

        self._run(sequences, per_batch, on_progress)
        return out

    def generate(self, prompts: list[list[int]], max_new_tokens: int,
                 on_progress: Callable[[int], None] | None = None) -> list[list[int]]:
        """Greedy continuations (new token ids only), left-padded batches under the token budget."""
        torch = self._torch
        results: list[list[int]] = [[] for _ in prompts]
        lengths = [len(p) + max_new_tokens for p in prompts]
        eos = self.tokenizer.eos_token_id
        with torch.inference_mode():
            for batch in pack_batches(lengths, self.batch_tokens):
                width = max(len(prompts[i]) for i in batch)
                ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    seq = prompts[i]
                    ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
                    mask[row, width - len(seq):] = 1
                self.forward_calls += 1
                out = self.model.generate(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device), do_sample=False,
                    max_new_tokens=max_new_tokens, pad_token_id=self.pad_id, eos_token_id=eos,
                )
                for row, i in enumerate(batch):
                    new = out[row, width:].tolist()
                    if eos is not None and eos in new:
                        new = new[: new.index(eos)]
                    results[i] = new
                if on_progress:
                    on_progress(len(batch))
        return results
