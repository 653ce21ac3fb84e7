"""What a comparison shows in the MLflow UI besides numbers: its records as dataset inputs,
and each trial's answers and per-record losses as tables, with prompts and references cut
to a length the UI's table can show."""

from __future__ import annotations

from cherrybench.eval_sets import EvalSet
from cherrybench.records import Record, records_fingerprint
from cherrybench.runners import tracking

TEXT_LIMIT = 500  # characters of a prompt, reference or answer kept in a logged table or dataset


def _short(texts) -> list[str]:
    """Each text cut to TEXT_LIMIT characters (an ellipsis says where); None as ''."""
    texts = ["" if t is None else str(t) for t in texts]
    return [t if len(t) <= TEXT_LIMIT else t[: TEXT_LIMIT - 1] + "…" for t in texts]


def records_frame(records: list[Record]):
    """A small frame of records for a logged dataset input: id, first question, its answer (cut)."""
    import pandas as pd

    return pd.DataFrame({"id": [r.id for r in records], "instruction": _short(r.turns[0].query for r in records),
                         "answer": _short(r.turns[0].output for r in records)})


def log_eval_inputs(comparison) -> None:
    """Each eval set of a comparison as an MLflow dataset input, with its content fingerprint."""
    for eval_set in comparison.evals:
        tracking.log_dataset(records_frame(eval_set.records), eval_set.name, records_fingerprint(eval_set.records),
                             "eval")


def answers_view(table):
    """The per-answer table as the UI shows it: texts cut, the scores without their reason columns."""
    view = table[[c for c in ("id", "prompt", "reference", "answer", "judge_quality", "rouge_l",
                              "embedding_similarity") if c in table.columns]].copy()
    for column in ("prompt", "reference", "answer"):
        view[column] = _short(view[column])
    return view


def losses_view(per_record, eval_set: EvalSet, answers=None):
    """The per-record eval losses with each record's prompt, reference answer and, for the
    records answered (the first `--gen-size`; `answers`, the per-answer table), the generated
    answer beside its loss and scores; '' for the others."""
    import pandas as pd

    texts = pd.DataFrame({"id": [r.id for r in eval_set.records],
                          "prompt": _short(r.turns[0].query for r in eval_set.records),
                          "reference": _short(r.turns[0].output for r in eval_set.records)}).drop_duplicates("id")
    view = per_record.rename(columns={"loss_mean": "answer_loss"}).merge(texts, on="id", how="left")
    if answers is not None:
        said = dict(zip(answers["id"], _short(answers["answer"])))
        view["answer"] = [said.get(i, "") for i in view["id"]]
    return view[[c for c in ("id", "prompt", "reference", "answer", "answer_loss", "n_tokens", "reason",
                              "judge_quality", "rouge_l", "embedding_similarity") if c in view.columns]]
