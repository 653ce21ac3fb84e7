"""Prompt formats for LM scoring and fine-tuning (SPEC, "Prompt formats").

A conversation is rendered as context pieces and answers, each tokenized on its
own and concatenated, so that the conditioned and the direct pass score the
identical answer token ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from cherrybench.records import Record, Turn

PROMPT_FORMATS = ("alpaca", "plain", "chat")

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)
TURN_SEPARATOR = "\n\n"  # ours: between an answer and the next prompt in alpaca/plain multi-turn


def single_prompt(turn: Turn, fmt: str) -> str:
    """The prompt for one question in the alpaca or plain format."""
    if fmt == "alpaca":
        template = ALPACA_WITH_INPUT if turn.input else ALPACA_NO_INPUT
        return template.format(instruction=turn.instruction, input=turn.input)
    if fmt == "plain":
        return f"{turn.instruction}\n{turn.input}\n" if turn.input else f"{turn.instruction}\n"
    raise ValueError(f"unknown prompt format {fmt!r}; choose one of {', '.join(PROMPT_FORMATS)}")


def _chat_messages(record: Record, upto: int) -> list[dict]:
    messages = [{"role": "system", "content": record.system}] if record.system else []
    for turn in record.turns[:upto]:
        messages.append({"role": "user", "content": turn.query})
        messages.append({"role": "assistant", "content": turn.output})
    messages.append({"role": "user", "content": record.turns[upto].query})
    return messages


def context_pieces(record: Record, fmt: str, tokenizer=None) -> list[str]:
    """For each turn t, the text that goes between answer t-1 and answer t.

    Joining piece_0, answer_0, piece_1, answer_1, ... renders the conversation;
    piece_0 + answer_0 + ... + piece_t is the context of turn t.
    """
    if fmt in ("alpaca", "plain"):
        pieces = [single_prompt(turn, fmt) for turn in record.turns]
        return [pieces[0]] + [TURN_SEPARATOR + p for p in pieces[1:]]
    if fmt != "chat":
        raise ValueError(f"unknown prompt format {fmt!r}; choose one of {', '.join(PROMPT_FORMATS)}")
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt format 'chat' needs a tokenizer with a chat template; use --prompt alpaca or plain")
    pieces, rendered = [], ""
    for t in range(len(record.turns)):
        full = tokenizer.apply_chat_template(_chat_messages(record, t), tokenize=False, add_generation_prompt=True)
        if not full.startswith(rendered):
            raise ValueError(
                f"record {record.id!r}: the chat template re-renders earlier turns differently at turn {t}, "
                "so turns cannot be scored incrementally; use --prompt alpaca or plain"
            )
        pieces.append(full[len(rendered):])
        rendered = full + record.turns[t].output
    return pieces


@dataclass
class TokenizedTurn:
    start: int  # index of the answer's first token in the conditioned sequence
    answer: list[int]  # the kept answer token ids (after truncation)


@dataclass
class TokenizedRecord:
    sequence: list[int]  # the conditioned sequence, cut at max_length
    turns: list[TokenizedTurn]
    reason: str | None  # why nothing can be scored, else None


def tokenize_record(record, lm, prompt: str, max_length: int) -> TokenizedRecord:
    """The token ids every LM metric, eval loss and fine-tune read: context pieces and
    answers tokenized separately, concatenated, cut at max_length (SPEC)."""
    pieces = context_pieces(record, prompt, lm.tokenizer)
    sequence: list[int] = []
    turns: list[TokenizedTurn] = []
    reasons: list[str] = []
    for piece, turn in zip(pieces, record.turns):
        sequence += lm.encode(piece)
        answer = lm.encode(turn.output)
        start = len(sequence)
        sequence += answer
        kept = answer[: max(0, max_length - start)]
        if not answer:
            reasons.append("empty_answer")
        elif len(answer) < 2:
            reasons.append("answer_too_short")
        elif len(kept) < 2:
            reasons.append("prompt_too_long")  # the prompt leaves no room for two answer tokens
        else:
            turns.append(TokenizedTurn(start=start, answer=kept))
    end = max((t.start + len(t.answer) for t in turns), default=0)
    return TokenizedRecord(sequence=sequence[:end], turns=turns, reason=None if turns else reasons[0])
