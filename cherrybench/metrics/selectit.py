"""SelectIT (Liu et al. 2024, "SelectIT: Selective Instruction Tuning for LLMs via
Uncertainty-Aware Self-Reflection"): the model rates its own training data, and
the uncertainty of the rating is part of the score, at three grains.

- Token level: each rating prompt is read at the first generated position over
  the digit tokens 1..K (the judge readout of `metrics/judge.py`: one forward
  pass, softmax over the digit logits, P'). The token score is the most likely
  digit times the mean gap between its probability and the others':
  `argmax_k P'_k * sum_i |P'_i - P'_max| / (K - 1)`, in [0, K]: a confident
  rating keeps its value, a flat one shrinks to 0.
- Sentence level: the same record under several rating prompts;
  `mean / (1 + alpha * std)` of its token scores over the prompts.
- Model level: several judge models, their sentence scores summed with weights
  proportional to the models' sizes, `sum_i theta_i / sum_j theta_j * S_i`.

The paper's settings are the defaults: K = 5 (digits 1..5; `scale`), 5 rating
prompts, alpha = 0.2 (`alpha`); it keeps the top 20% (here the budget
decides). Ours, where the paper and its released code leave it open or where
we differ:

- the five rating prompts are reworded by us (same intent: rate how accurately
  the response follows the instruction, 1..K, score alone); every prompt
  states the scale 1..K, for any `scale`; the prompt count is the paper's
  five whatever K is (the released code reads K prompts and K digits from one
  setting);
- each prompt is followed by `Instruction: ` (the whole user query,
  instruction then input) and `Response: `, and ends `The answer is: ` so the
  next token is the rating;
- std is the population std (over the prompts, ddof 0), as the released code;
  a tie for the most likely digit goes to the lower digit;
- a multi-turn record's token score for a prompt is the mean over its turns;
- one judge by default, `judge` (default: the scoring model; `--judge`), whose
  score is the sentence level; `judges`, a list of models, takes its place for
  the model level; a judge's size theta is its parameter count as loaded,
  unless `judge_sizes` gives them (the paper: 7, 13 and 70 for LLaMA-2). The
  names `scale`, `judges` and `judge_sizes` keep clear of knn's `k` and the
  other judges' `judge`: a `--param` reaches every plugin of a run;
- `readout="expected"` uses the expected digit value (Deita's readout, as issue
  14 words it) as the token score instead of the paper's;
- besides the score, the columns show the uncertainty: the mean and std over
  the prompts and each prompt's token score (with several judges, each is the
  size-weighted mean over the judges; the score itself is the paper's weighted
  sum of the judges' sentence scores);
- a record whose prompt cannot fit `judge_max_length` even with its longest field
  cut is NaN with `prompt_too_long` (blank answers: `empty_answer`, from the
  scoring core).
"""

from __future__ import annotations

import numpy as np

from cherrybench.lm import JUDGE_MAX_LENGTH
from cherrybench.metrics import register_metric
from cherrybench.metrics.judge import PromptJudge, expected_scores


# the rating prompts, reworded by us after the paper's; {k} is the top of the scale
RATING_PROMPTS = (
    "Rate how accurately the response follows the instruction on a scale from 1 to {k}, and give the score on "
    "its own.",
    "On a scale of 1 to {k}, score how faithfully the response carries out the instruction and its input; "
    "reply with the number alone.",
    "Judge how precisely the response answers the task on a scale of 1 to {k}, where {k} is the most precise, "
    "and write only the score.",
    "Grade the correctness of the response to the instruction with a whole number from 1 to {k}, {k} meaning "
    "fully correct, and put the number on a line by itself.",
    "Give the response a score from 1 to {k} for how well it follows the instruction and how accurate it is, "
    "and show the score plainly.",
)
N_PROMPTS = len(RATING_PROMPTS)
LAYOUT = "{rating}\n\nInstruction: {{query}}\nResponse: {{output}}\nThe answer is: "
READOUTS = ("paper", "expected")


def rating_templates(k: int) -> list[str]:
    """The judge templates of the rating prompts for the scale 1..k."""
    return [LAYOUT.format(rating=prompt.format(k=k)) for prompt in RATING_PROMPTS]


def token_level(logits: np.ndarray, readout: str = "paper") -> np.ndarray:
    """Token scores from the digit logits of ratings 1..K, one row per rating.

    paper: argmax_k P'_k * sum_i |P'_i - P'_max| / (K - 1), P' the softmax over
    the digit logits (a tie goes to the lower digit); expected: the judge
    readout, sum_k k * P'_k."""
    if readout == "expected":
        return expected_scores(logits, 1)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    best = probs.argmax(axis=1)
    top = probs[np.arange(len(probs)), best]
    gap = np.abs(probs - top[:, None]).sum(axis=1) / (probs.shape[1] - 1)
    return (best + 1) * gap


def sentence_level(token: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, mean, std) over the prompts (last axis): mean / (1 + alpha * std), std with ddof 0."""
    mean = token.mean(axis=-1)
    std = token.std(axis=-1)
    return mean / (1 + alpha * std), mean, std


def model_weights(sizes) -> np.ndarray:
    """theta_i / sum_j theta_j."""
    sizes = np.asarray(sizes, dtype=np.float64)
    return sizes / sizes.sum()


def model_level(sentence: np.ndarray, sizes) -> np.ndarray:
    """sum_i theta_i / sum_j theta_j * S_i over the judges (first axis)."""
    return np.tensordot(model_weights(sizes), sentence, axes=1)


@register_metric()
class SelectIT(PromptJudge):
    """SelectIT: self-ratings 1..K under five prompts, penalised by their spread, summed over judges by size."""

    name = "selectit"
    columns = {"selectit": "higher", "selectit_mean": "higher", "selectit_std": "none",
               **{f"selectit_p{i + 1}": "higher" for i in range(N_PROMPTS)}}

    def __init__(self, judge: str | None = None, judges: list | None = None, judge_sizes: list | None = None,
                 scale: int = 5, alpha: float = 0.2, readout: str = "paper", chat: bool = False,
                 judge_max_length: int = JUDGE_MAX_LENGTH):
        super().__init__(judge=judge, chat=chat, judge_max_length=judge_max_length)
        self.judges = judges  # several judge models (the model level); in place of `judge`
        self.judge_sizes = judge_sizes  # their sizes theta (default: parameter counts)
        self.scale = scale  # ratings 1..scale: the paper's K
        self.alpha = alpha
        self.readout = readout

    def check_params(self) -> None:
        self.check_number("scale", 2, 9, integer=True)
        self.check_number("alpha", 0)
        self.check_choice("readout", READOUTS)
        if self.judges is not None:
            if not (isinstance(self.judges, list) and self.judges
                    and all(isinstance(j, str) and j for j in self.judges)):
                raise ValueError(f"{self.who}: parameter judges must be a non-empty list of models, "
                                 f"got {self.judges!r}")
            if len(set(self.judges)) != len(self.judges):
                raise ValueError(f"{self.who}: parameter judges names a model twice: {self.judges!r}")
        n = len(self.judge_models())
        if self.judge_sizes is not None and not (
                isinstance(self.judge_sizes, list) and len(self.judge_sizes) == n
                and all(isinstance(s, (int, float)) and not isinstance(s, bool) and np.isfinite(s) and s > 0
                        for s in self.judge_sizes)):
            raise ValueError(f"{self.who}: parameter judge_sizes must be a list of {n} positive numbers, "
                             f"one per judge, got {self.judge_sizes!r}")

    def judge_models(self) -> list:
        """The judge models: `judges` for the model level, else the one `judge` (None: the scoring model)."""
        return list(self.judges) if self.judges is not None else [self.judge]

    def fingerprints(self, ctx) -> dict:
        return {"judges": [ctx.model_ref(j).fingerprint for j in self.judge_models()]}

    def templates(self) -> dict[str, tuple[str, int, int]]:
        return {f"p{i + 1}": (t, 1, self.scale) for i, t in enumerate(rating_templates(self.scale))}

    def judge_token_scores(self, lm, records) -> tuple[np.ndarray, set[int]]:
        """[records, prompts] token scores of one judge (mean over turns), and the records
        whose prompt cannot fit judge_max_length."""
        logits, owners, too_long = self.digit_logits(lm, records)  # the judge readout's prompts and pass
        sums = np.zeros((len(records), N_PROMPTS))
        counts = np.zeros((len(records), N_PROMPTS))
        for p, key in enumerate(self.templates()):
            if key in logits:
                rows = np.array([r for r, _ in owners[key]])
                np.add.at(sums[:, p], rows, token_level(logits[key], self.readout))
                np.add.at(counts[:, p], rows, 1)
        with np.errstate(invalid="ignore"):
            return sums / counts, too_long

    def compute(self, records, ctx):
        judges = self.judge_models()
        token = np.full((len(judges), len(records), N_PROMPTS), np.nan)
        too_long: set[int] = set()
        for j, spec in enumerate(judges):
            token[j], unfit = self.judge_token_scores(ctx.lm(spec), records)
            too_long |= unfit
        if self.judge_sizes is not None:
            sizes = self.judge_sizes
        elif len(judges) == 1:
            sizes = [1.0]
        else:
            sizes = [ctx.lm(spec).model.num_parameters() for spec in judges]
        weights = model_weights(sizes)
        score, mean, std = sentence_level(token, self.alpha)  # [judges, records] each
        rows = []
        for r in range(len(records)):
            if r in too_long:
                rows.append(self.nan_row("prompt_too_long"))
                continue
            row = {"selectit": float(model_level(score[:, r], sizes)), "selectit_mean": float(weights @ mean[:, r]),
                   "selectit_std": float(weights @ std[:, r]), self.reason_column: None}
            row.update({f"selectit_p{i + 1}": float(weights @ token[:, r, i]) for i in range(N_PROMPTS)})
            rows.append(row)
        return self.frame(rows)
