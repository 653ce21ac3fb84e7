"""Prompt formats: alpaca and plain as SPEC writes them, chat through the
tokenizer's own template, turn by turn."""

from __future__ import annotations

import pandas as pd
import pytest

from cherrybench.metrics.ifd import IFD
from cherrybench.models import ModelNotFoundError, resolve_model
from cherrybench.prompts import context_pieces
from cherrybench.records import Record, Turn

CONVERSATION = Record("c", [Turn("Hi there", "Hello! How can I help?"), Turn("Name a colour", "Blue."),
                            Turn("Another?", "Green.")], system="Be short.")


def test_alpaca_and_plain_strings():
    record = Record("a", [Turn("Sum these.", "5", input="2 3")])
    assert context_pieces(record, "alpaca") == [
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nSum these.\n\n"
        "### Input:\n2 3\n\n### Response:"]
    assert context_pieces(record, "plain") == ["Sum these.\n2 3\n"]
    assert context_pieces(Record("b", [Turn("Hi", "x")]), "plain") == ["Hi\n"]


@pytest.mark.slow
def test_chat_pieces_rebuild_the_template_rendering(lm):
    """Joining piece_t + answer_t over turns gives the template's rendering of
    the whole conversation, and each prefix is the template's prompt for that turn."""
    tok = lm.tokenizer
    pieces = context_pieces(CONVERSATION, "chat", tok)
    messages = [{"role": "system", "content": "Be short."}]
    rendered = ""
    for t, (piece, turn) in enumerate(zip(pieces, CONVERSATION.turns)):
        messages.append({"role": "user", "content": turn.instruction})
        assert rendered + piece == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        rendered += piece + turn.output
        messages.append({"role": "assistant", "content": turn.output})
    full = tok.apply_chat_template(messages, tokenize=False)
    assert full.startswith(rendered)


def test_chat_warning_when_most_ifd_exceed_one():
    table = pd.DataFrame({"ifd": [1.2, 1.1, 0.9]})
    assert IFD(prompt="chat").warnings(table) and "known pitfall" in IFD(prompt="chat").warnings(table)[0]
    assert IFD(prompt="chat").warnings(pd.DataFrame({"ifd": [1.2, 0.8, 0.9]})) == []
    assert IFD(prompt="alpaca").warnings(table) == []


def test_missing_model_path_says_how_to_get_one(tmp_path):
    with pytest.raises(ModelNotFoundError, match="never downloads weights.*huggingface-cli download"):
        resolve_model(str(tmp_path / "no-such-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="has no config.json"):
        resolve_model(str(tmp_path / "empty"))
