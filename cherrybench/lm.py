"""The one causal-LM backend every model-backed metric shares.

Its batch methods take token id sequences, sort them by length, pack them into
batches under a token budget (right padding, attention masks), and ask the
model's own causal-LM forward for logits only at the positions whose output is
needed (a `logits_to_keep` mask), so every family's final logit transforms (Gemma's
softcapping, Granite's and Cohere's scaling, ...) apply as the model defines
them: per-token losses (cas, das, ppl, eval loss), next-token logits for a few
candidate tokens (judges), pooled hidden states (embeddings) and greedy generation.

With `packing` (on by default where the attention kernel is flash attention, which
runs each packed sequence on its own, so no token is padding), the sequences of a
batch are laid end to end in one row instead: positions restart at each sequence,
and transformers masks attention within each of them (any kernel; sdpa and eager
compute the masked-out blocks too, so packing pays only with flash attention).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from cherrybench.models import ModelRef, pick_device, pick_dtype, resolve_model

LOGITS_BUDGET = 1 << 27  # logits one forward may return (kept rows x vocab, 512 MiB in fp32): bounds that buffer
HEAD_CHUNK_ROWS = 1024  # logit rows read (in fp32) at a time
POOLINGS = ("mean", "last", "weighted")
JUDGE_MAX_LENGTH = 2048  # tokens of a judge's prompt: its own budget, never the scoring/training --max-length


def position_weights(n: int) -> np.ndarray:
    """Weights of positions 1..n proportional to the position, summing to 1 (RDS+,
    after SGPT's weighted mean): later tokens of a causal LM have seen more of the text."""
    positions = np.arange(1, n + 1, dtype=np.float64)
    return (positions / positions.sum()).astype(np.float32)


def pool(hidden, pooling: str):
    """One sequence's hidden states [n, hidden] (a torch tensor, no padding) pooled to [hidden] in fp32."""
    hidden = hidden.float()
    if pooling == "mean":
        return hidden.mean(0)
    if pooling == "last":
        return hidden[-1]
    weights = hidden.new_tensor(position_weights(len(hidden)))
    return (hidden * weights[:, None]).sum(0)


def default_batch_tokens(device: str) -> int:
    # measured: on a 2-core CPU small batches are fastest per token (cache-resident activations)
    return 65536 if device.startswith("cuda") else 512


def digit_token_ids(lm, low: int, high: int) -> list[int]:
    """Token id of each score digit low..high; raises when one is not a single token.
    A SentencePiece tokenizer that prepends "▁" (Llama, Mistral: the released Deita scorers)
    encodes a lone "1" as ["▁", "1"]; its bare digit piece, what the model emits after the
    prompt, is then found in the vocabulary."""
    if not 0 <= low < high <= 9:
        raise ValueError(f"judge digits must satisfy 0 <= low < high <= 9, got {low}..{high}")
    ids = []
    for digit in range(low, high + 1):
        tokens = lm.encode(str(digit))
        if len(tokens) != 1 or tokens[0] == lm.tokenizer.unk_token_id:
            piece = lm.tokenizer.convert_tokens_to_ids(str(digit))
            if piece is None or piece == lm.tokenizer.unk_token_id:
                raise ValueError(f"judge model {lm.ref.spec!r}: the score digit {digit!r} is {len(tokens)} tokens "
                                 f"({tokens}) and no token of its own; its expected-value readout is undefined "
                                 "for this tokenizer")
            tokens = [piece]
        ids.append(tokens[0])
    return ids


def default_generate_tokens(device: str) -> int:
    # measured: a decoding step reads every weight once whatever the rows, so on CPU wide batches
    # pay (benchmarks/generate_throughput.py: 24 Alpaca prompts, 48 new tokens, one thread: 2.3x faster at 4096 than 512)
    return 65536 if device.startswith("cuda") else 4096


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


def pack_rows(lengths: list[int], row_tokens: int) -> list[list[int]]:
    """Indices sorted longest first, laid end to end in rows of at most row_tokens
    tokens (a longer sequence alone): padding-free packing, no token wasted."""
    return split_for_head(sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)), lengths, row_tokens)


FLASH_KERNELS = ("flash_attention_2", "flash_attention_3")


def attention_kernel(device: str) -> str | None:
    """flash_attention_2 on CUDA where the flash-attn package is installed (it runs packed
    sequences without padding), else None: transformers' own default (sdpa)."""
    import importlib.util

    return "flash_attention_2" if device.startswith("cuda") and importlib.util.find_spec("flash_attn") else None


def split_for_head(batch: list[int], counts: list[int], max_rows: int) -> list[list[int]]:
    """Cut a packed batch into runs that keep at most max_rows logit rows in all
    (counts[i] for sequence i; at least one sequence a run): bounds the logits buffer."""
    runs, current, total = [], [], 0
    for i in batch:
        if current and total + counts[i] > max_rows:
            runs.append(current)
            current, total = [], 0
        current.append(i)
        total += counts[i]
    if current:
        runs.append(current)
    return runs


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
                 batch_tokens: int | None = None, trust_remote_code: bool = False, packing: bool | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.ref = model if isinstance(model, ModelRef) else resolve_model(model)
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device)
        tokenizer = AutoTokenizer.from_pretrained(self.ref.directory, trust_remote_code=trust_remote_code)
        kernel = attention_kernel(self.device)
        model = AutoModelForCausalLM.from_pretrained(
            self.ref.directory, dtype=self.dtype, trust_remote_code=trust_remote_code,
            **({"attn_implementation": kernel} if kernel else {}),
        ).to(self.device)
        model.eval()
        self._attach(model, tokenizer, batch_tokens, packing)

    def _attach(self, model, tokenizer, batch_tokens: int | None, packing: bool | None) -> None:
        """What the batch methods read besides `device` and `dtype`, for `model` in memory
        (a subclass over a model being trained calls this instead of loading one)."""
        import torch

        self.model, self.tokenizer = model, tokenizer
        self.base = getattr(model, model.base_model_prefix)
        self.head_rows = max(1, LOGITS_BUDGET // model.get_output_embeddings().weight.shape[0])  # per forward
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)
        self.batch_tokens = batch_tokens or default_batch_tokens(self.device)
        self.generate_tokens = max(self.batch_tokens, default_generate_tokens(self.device))  # prompt + new tokens
        self.attention = getattr(model.config, "_attn_implementation", None)
        # padding-free rows where the kernel skips what they mask; `packing=` overrides (tests, benchmarks)
        self.packing = self.attention in FLASH_KERNELS if packing is None else packing
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
    def _forward(self, batch: list[list[int]], prefix=None, keep=None):
        """Run right-padded `batch`; with prefix=(length, cache) the rows continue a
        shared, already computed prefix. With `keep` (a boolean [rows, width] mask),
        the model's own causal-LM forward returns the logits at the kept positions
        only, [kept, vocab] row by row, so they are exactly the model's (its head and
        whatever follows it); without it, the base model returns the last hidden
        states [rows, width, hidden]."""
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
        kwargs = {"use_cache": False}
        if prefix:
            cache = copy.deepcopy(prefix[1])  # the shared cache stays intact for the next batch
            cache.batch_repeat_interleave(len(batch))
            positions = torch.arange(start, start + width, device=self.device).expand(len(batch), width)
            kwargs = {"cache": cache, "position_ids": positions, "use_cache": True}
        self.forward_calls += 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        if keep is None:
            return self.base(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state
        return self.model(input_ids=ids, attention_mask=mask, logits_to_keep=keep.to(self.device), **kwargs).logits

    def _forward_packed(self, batch: list[list[int]], keep=None):
        """Run `batch` laid end to end in one row, positions restarting at each sequence
        and no attention mask, so that transformers keeps attention within each sequence.
        Returns what `_forward` returns for the same rows: hidden states scattered back to
        [rows, width, hidden]; or, with `keep` (the positions whose logits each row needs),
        the kept logits [kept, vocab] and index[row, p], the logits row of position p."""
        torch = self._torch
        lengths = [len(s) for s in batch]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()
        ids = torch.tensor([[t for s in batch for t in s]], dtype=torch.long, device=self.device)
        positions = torch.cat([torch.arange(n) for n in lengths])[None].to(self.device)
        width = max(lengths)
        self.forward_calls += 1
        if keep is None:
            flat = self.base(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state[0]
            hidden = flat.new_zeros((len(batch), width, flat.shape[-1]))
            for row, (start, n) in enumerate(zip(starts, lengths)):
                hidden[row, :n] = flat[start: start + n]
            return (hidden,)
        kept = torch.zeros((1, sum(lengths)), dtype=torch.bool)
        for start, positions_kept in zip(starts, keep):
            kept[0, [start + p for p in positions_kept]] = True
        logits = self.model(input_ids=ids, position_ids=positions, logits_to_keep=kept.to(self.device),
                            use_cache=False).logits
        flat_index = torch.full((sum(lengths),), -1, dtype=torch.long)
        flat_index[kept[0]] = torch.arange(int(kept.sum()))
        index = torch.full((len(batch), width), -1, dtype=torch.long)
        for row, (start, n) in enumerate(zip(starts, lengths)):
            index[row, :n] = flat_index[start: start + n]
        return logits, index

    def _plan(self, sequences, keep):
        """(indices, token rows, prefix) for each forward: length-sorted batches under
        the token budget; with `keep`, also cut to the logits budget, and sequences
        sharing a long prefix (a prompt template) continue one KV cache of it instead
        of recomputing it per record. With packing: rows of whole sequences end to end under
        the token budget, and no shared prefix (a packed row cannot continue one cache)."""
        if self.packing:
            counts = [len(set(k)) for k in keep] if keep is not None else None
            for batch in pack_rows([len(s) for s in sequences], self.batch_tokens):
                for part in [batch] if keep is None else split_for_head(batch, counts, self.head_rows):
                    yield part, [sequences[i] for i in part], None
            return
        if keep is None:
            groups, rest = [], list(range(len(sequences)))
        else:
            groups, rest = prefix_groups(sequences, [min(k) for k in keep])
            counts = [len(set(k)) for k in keep]  # logit rows each sequence keeps
        for length, members in [(0, rest)] + groups:
            prefix = (length, self._prefix_cache(sequences[members[0]][:length])) if length else None
            for batch in pack_batches([len(sequences[i]) - length for i in members], self.batch_tokens):
                batch = [members[i] for i in batch]
                for part in [batch] if keep is None else split_for_head(batch, counts, self.head_rows):
                    yield part, [sequences[i][length:] for i in part], prefix

    def _run(self, sequences, per_batch: Callable, on_progress: Callable[[int], None] | None,
             keep: list[list[int]] | None = None):
        """Feed `sequences` through the network. Without `keep`: per_batch(indices,
        hidden), hidden[row, p] being the last hidden state at position p. With `keep`
        (the positions whose next-token logits each sequence needs):
        per_batch(indices, logits, index), logits[index[row, p]] being the model's
        logits at position p."""
        torch = self._torch
        with torch.inference_mode():
            for part, rows, prefix in self._plan(sequences, keep):
                if self.packing:
                    per_batch(part, *self._forward_packed(rows, None if keep is None else [keep[i] for i in part]))
                elif keep is None:
                    per_batch(part, self._forward(rows))
                else:
                    start = prefix[0] if prefix else 0
                    kept = torch.zeros((len(part), start + max(map(len, rows))), dtype=torch.bool)
                    for row, i in enumerate(part):
                        kept[row, keep[i]] = True
                    index = torch.full(kept.shape, -1, dtype=torch.long)
                    index[kept] = torch.arange(int(kept.sum()))
                    per_batch(part, self._forward(rows, prefix, kept[:, start:]), index)
                if on_progress:
                    on_progress(len(part))

    def _prefix_cache(self, prefix: list[int]):
        """The KV cache of one prefix, a transformers Cache passed back as `cache`
        (the `past_key_values` name is deprecated)."""
        self.forward_calls += 1
        ids = self._torch.tensor([prefix], dtype=self._torch.long, device=self.device)
        return self.base(input_ids=ids, use_cache=True).cache

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

        def per_batch(batch, logits, index):
            rows, positions, labels, owners = [], [], [], []
            for row, local in enumerate(batch):
                i = work[local]
                rows += [row] * len(targets[i])
                positions += [p - 1 for p in targets[i]]
                labels += [sequences[i][p] for p in targets[i]]
                owners.append((i, len(targets[i])))
            at = index[torch.tensor(rows), torch.tensor(positions)].to(logits.device)
            labels = torch.tensor(labels, device=logits.device)
            losses = []
            for start in range(0, len(at), HEAD_CHUNK_ROWS):
                chunk = slice(start, start + HEAD_CHUNK_ROWS)
                picked = logits[at[chunk]].float()
                losses.append(torch.logsumexp(picked, dim=-1) - picked.gather(1, labels[chunk, None])[:, 0])
            flat = torch.cat(losses).double().cpu().numpy()
            offset = 0
            for i, n in owners:
                results[i] = flat[offset: offset + n]
                offset += n

        self._run([sequences[i] for i in work], per_batch, on_progress,
                  keep=[[p - 1 for p in targets[i]] for i in work])
        return results

    def last_token_logits(self, sequences: list[list[int]], token_ids: list[int],
                          on_progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Logits of `token_ids` at the position after each sequence's last token: [n, len(token_ids)]."""
        torch = self._torch
        out = np.zeros((len(sequences), len(token_ids)), dtype=np.float64)

        def per_batch(batch, logits, index):
            at = index[torch.arange(len(batch)), torch.tensor([len(sequences[i]) - 1 for i in batch])]
            ids = torch.tensor(token_ids, device=logits.device)
            out[batch] = logits[at.to(logits.device)[:, None], ids[None, :]].double().cpu().numpy()

        self._run(sequences, per_batch, on_progress, keep=[[len(seq) - 1] for seq in sequences])
        return out

    def pooled_hidden(self, sequences: list[list[int]], pooling: str = "mean",
                      on_progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Last-layer hidden states pooled over each sequence ('mean', 'last', or
        'weighted': the position-weighted mean of RDS+, see `position_weights`): [n, hidden]."""
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(map(repr, POOLINGS))}, got {pooling!r}")
        out = np.zeros((len(sequences), self.model.config.hidden_size), dtype=np.float32)

        def per_batch(batch, hidden):
            for row, i in enumerate(batch):
                n = len(sequences[i])
                out[i] = pool(hidden[row, :n], pooling).cpu().numpy()

        self._run(sequences, per_batch, on_progress)
        return out

    def generate(self, prompts: list[list[int]], max_new_tokens: int,
                 on_progress: Callable[[int], None] | None = None) -> list[list[int]]:
        """Greedy continuations (new token ids only), left-padded batches under `generate_tokens`
        (prompt and new tokens), wider than scoring's: decoding is bound by reading the weights."""
        torch = self._torch
        results: list[list[int]] = [[] for _ in prompts]
        lengths = [len(p) + max_new_tokens for p in prompts]
        eos = self.tokenizer.eos_token_id
        with torch.inference_mode():
            for batch in pack_batches(lengths, self.generate_tokens):
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
