"""The engine's logits are the model's own, whatever the family does after its LM
head (Gemma's softcapping, Granite's and Cohere's logit scaling): token losses and
last-token logits through LanguageModel equal those of a plain full forward, with
and without the shared-prefix KV cache, on tiny random models built offline."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from cherrybench.lm import MIN_SHARED_PREFIX, LanguageModel, pack_rows, prefix_groups, split_for_head

COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.1,
              bos_token_id=1, eos_token_id=2, pad_token_id=2)
FAMILIES = {
    "llama": ("LlamaConfig", {}),
    "qwen2": ("Qwen2Config", {}),
    # a small window, so the prefix cache's sliding layers are really cut
    "gemma2": ("Gemma2Config", {"head_dim": 16, "final_logit_softcapping": 2.0, "sliding_window": 8}),
    "granite": ("GraniteConfig", {"logits_scaling": 8.0}),
    "cohere": ("CohereConfig", {"logit_scale": 0.0625}),
}


@pytest.fixture(scope="module")
def tokenizer(isolated_cache):
    from transformers import AutoTokenizer

    from cherrybench.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(None).directory)  # the embedded SmolLM2's


def build(root, tokenizer, family: str, **overrides) -> LanguageModel:
    """A tiny randomly initialised `family` model (fp32, fixed seed) with SmolLM2's tokenizer, loaded by the engine."""
    import transformers
    from transformers import AutoModelForCausalLM

    name, extra = FAMILIES[family]
    config = getattr(transformers, name)(vocab_size=len(tokenizer), **COMMON, **{**extra, **overrides})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    path = root / "-".join([family] + [f"{k}={v}" for k, v in overrides.items()])
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return LanguageModel(str(path), device="cpu")


TEMPLATE = MIN_SHARED_PREFIX + 8  # tokens


def sequences(vocab: int) -> list[list[int]]:
    """Three records behind one template (the prefix path) and two of their own."""
    g = torch.Generator().manual_seed(1)
    ids = lambda n: torch.randint(3, vocab, (n,), generator=g).tolist()  # noqa: E731
    template = ids(TEMPLATE)
    return [template + ids(9), template + ids(14), template + ids(5), ids(30), ids(12)]


def reference(lm, seq: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """From the model's own full forward pass: the loss of every token seq[p], p >= 1,
    and the logits after the last token."""
    with torch.no_grad():
        logits = lm.model(torch.tensor([seq])).logits[0].double()
    losses = -torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(seq[1:])[:, None])[:, 0]
    return losses, logits[-1]


class Deprecations(logging.Handler):
    """transformers announces some deprecations through its logger (once per process), not `warnings`."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        if "deprecat" in record.getMessage().lower():
            self.messages.append(record.getMessage())


def test_split_for_head_bounds_kept_logit_rows():
    assert split_for_head([4, 0, 1, 2, 3], [3, 2, 1, 5, 2], max_rows=5) == [[4, 0], [1, 2], [3]]
    assert split_for_head([0, 1], [20, 1], max_rows=8) == [[0], [1]]  # one sequence always runs, whatever it keeps


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_engine_logits_are_the_models_own(tmp_path, monkeypatch, tokenizer, family):
    lm = build(tmp_path, tokenizer, family)
    seqs = sequences(len(lm.tokenizer))
    answer = [list(range(TEMPLATE + 2, len(s))) if i < 3 else list(range(1, len(s))) for i, s in enumerate(seqs)]
    groups, _ = prefix_groups(seqs, [min(t) - 1 for t in answer])
    assert groups and groups[0][1] == [0, 1, 2]  # the template's records share one KV cache

    monkeypatch.setattr(logging.Logger, "warning_once", logging.Logger.warning)  # every time, not once per process
    handler = Deprecations()
    logging.getLogger("transformers").addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            before = lm.forward_calls
            cached = lm.token_losses(seqs, answer)  # answers only: the template comes from the cache
            assert lm.forward_calls - before == 3  # the two loners, the template, its three suffixes
            whole = lm.token_losses(seqs, [list(range(1, len(s))) for s in seqs])  # every token: no cache
            picks = [5, 17, 300, len(lm.tokenizer) - 1]
            last = lm.last_token_logits(seqs, picks)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert handler.messages == []

    close = lambda got, want: torch.allclose(torch.from_numpy(got), want, atol=1e-4, rtol=0)  # noqa: E731
    for i, seq in enumerate(seqs):
        losses, logits = reference(lm, seq)
        assert close(whole[i], losses), (family, i)
        assert close(cached[i], losses[[p - 1 for p in answer[i]]]), (family, i)
        assert close(last[i], logits[picks]), (family, i)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gemma2", "granite"])
def test_packed_rows_give_the_padded_engines_results(tmp_path, tokenizer, family):
    """Padding-free packing (sequences end to end in one row, positions restarting,
    attention kept within each by transformers' packed-sequence mask) changes where
    tokens sit, not what the model computes: losses, last-token logits and pooled
    hidden states equal the model's own full forward / the padded engine's."""
    lm = build(tmp_path, tokenizer, family)
    seqs = sequences(len(lm.tokenizer))
    every = [list(range(1, len(s))) for s in seqs]
    picks = [5, 17, 300]
    padded_hidden = lm.pooled_hidden(seqs, "mean")
    lm.packing, lm.batch_tokens = True, 64  # rows of at most 64 tokens: 30 | 33+12+14? -> several rows
    before = lm.forward_calls
    losses = lm.token_losses(seqs, every)
    rows = pack_rows([len(s) for s in seqs], 64)
    assert lm.forward_calls - before == len(rows) < len(seqs)  # several sequences share a row
    last = lm.last_token_logits(seqs, picks)
    packed_hidden = lm.pooled_hidden(seqs, "mean")
    for i, seq in enumerate(seqs):
        want_losses, want_logits = reference(lm, seq)
        assert torch.allclose(torch.from_numpy(losses[i]), want_losses, atol=1e-4, rtol=0), (family, i)
        assert torch.allclose(torch.from_numpy(last[i]), want_logits[picks], atol=1e-4, rtol=0), (family, i)
        assert abs(packed_hidden[i] - padded_hidden[i]).max() < 1e-4, (family, i)


@pytest.mark.slow
def test_granite_logits_scaling_reaches_the_losses(tmp_path, tokenizer):
    """Regression: the engine once applied the bare LM head, so Granite's logits_scaling was lost."""
    plain = build(tmp_path, tokenizer, "granite", logits_scaling=1.0)
    scaled = build(tmp_path, tokenizer, "granite", logits_scaling=8.0)
    seq = sequences(len(plain.tokenizer))[3]
    a = plain.token_losses([seq], [list(range(1, len(seq)))])[0]
    b = scaled.token_losses([seq], [list(range(1, len(seq)))])[0]
    assert abs(a - b).max() > 0.1  # same weights, different scaling: clearly different losses
    assert torch.allclose(torch.from_numpy(b), reference(scaled, seq)[0], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_logits_budget_splits_forwards_not_results(tmp_path, tokenizer):
    lm = build(tmp_path, tokenizer, "llama")
    seqs = sequences(len(lm.tokenizer))
    every = [list(range(1, len(s))) for s in seqs]
    together = lm.token_losses(seqs, every)
    before = lm.forward_calls
    lm.head_rows = 1  # one forward per sequence
    apart = lm.token_losses(seqs, every)
    assert lm.forward_calls - before == len(seqs)
    for x, y in zip(together, apart):
        assert abs(x - y).max() < 1e-5
