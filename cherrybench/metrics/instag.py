"""InsTag (Lu et al. 2023): a tagger LM writes the user-intention tags of each
query as a JSON list of {"tag", "explanation"}; complexity = the number of
distinct tags (SPEC: InsTag). Tags are lower-cased, their whitespace collapsed,
and deduplicated (ours); a multi-turn record's tags are those of all its
questions together (ours).

The released tagger is OFA-Sys/InsTagger (LLaMA-2-7B): `--param tagger=DIR`,
and `--param chat=false` when its tokenizer has no chat template (the prompt
then ends in `Assistant: `, as InsTagger's does). The default is the embedded
SmolLM2-135M, which is weak at this: it writes the JSON form (the answer is
started for it with `[{"tag": "`) but its tags are often a word of the query or
a generic label, and its answers are often cut or malformed; read its
complexity as a smoke test, not as InsTag's.
"""

from __future__ import annotations

import json
import re

from cherrybench.lm import JUDGE_MAX_LENGTH
from cherrybench.metrics import register_metric
from cherrybench.metrics.generated import GeneratedAnswerMetric

# the InsTagger prompt (the model card's); the answer starts as the tagger's list does
TEMPLATE = ("You are a helpful assistant. Please identify tags of user intentions in the following user query and "
            "provide an explanation for each tag. Please respond in the JSON format "
            '{{"tag": str, "explanation": str}}.\nQuery: {query}')
PREFILL = '[{"tag": "'
TAG = re.compile(r'"tag"\s*:\s*"((?:[^"\\]|\\.)*)"')


def parse_tags(text: str) -> list[str] | None:
    """The distinct tags of one answer, in order of appearance: the string value of every
    `"tag": "..."` member (a list cut off at max_new_tokens keeps its complete tags; a
    malformed explanation does not lose its tag), lower-cased, whitespace collapsed.
    None when no tag can be read."""
    tags: list[str] = []
    for match in TAG.finditer(text):
        try:
            value = json.loads(f'"{match.group(1)}"', strict=False)  # a raw line break is allowed
        except json.JSONDecodeError:
            continue
        tag = " ".join(value.lower().split())
        if tag and tag not in tags:
            tags.append(tag)
    return tags or None


def join_tags(tags: list[str]) -> str:
    """The `instag_tags` cell: one tag a line (a tag never holds a line break)."""
    return "\n".join(tags)


def split_tags(cell) -> list[str]:
    """The tags of an `instag_tags` cell."""
    return [t for t in str(cell).split("\n") if t]


@register_metric(aliases=("instag_complexity",))
class InsTag(GeneratedAnswerMetric):
    """InsTag: a tagger LM's user-intention tags per query; complexity = number of distinct tags."""

    name = "instag"
    columns = {"instag_complexity": "higher"}
    template = TEMPLATE
    prefill = PREFILL

    def __init__(self, tagger: str | None = None, chat: bool = True, judge_max_length: int = JUDGE_MAX_LENGTH,
                 max_new_tokens: int = 256):
        self.tagger = tagger  # the tagger LM (default: the scoring model)
        self.chat = chat
        self.judge_max_length = judge_max_length
        self.max_new_tokens = max_new_tokens

    def model_spec(self):
        return self.tagger

    @property
    def output_columns(self) -> list[str]:
        return ["instag_complexity", "instag_tags", self.text_column, self.reason_column]

    def combine(self, answers: list[str]) -> dict:
        tags: list[str] = []
        for answer in answers:
            parsed = parse_tags(answer)
            if parsed is None:
                return dict(self.nan_row("unparsable_tags"), instag_tags=None)
            tags += [t for t in parsed if t not in tags]
        return {"instag_complexity": float(len(tags)), "instag_tags": join_tags(tags), self.reason_column: None}
