"""The grading prompt (Lanke et al.'s LLM reasoning module) and the validation of its reply.

The model returns ``{coherence, correctness, justification}`` (:class:`GradeReply`) with both scores in [0, 1];
S_LLM is their mean. Scores outside [0, 1] are clamped and flagged (Cvengros & Kortemeyer saw over-max and
negative points from its model). ``PROMPT_VERSION`` is part of the reply-cache key: change it
whenever the wording or the schema changes, so old replies are not reused for a new prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from grading.llm.client import reply_schema
from grading.rubric import Question

PROMPT_VERSION = "grade-v1"


# No bounds on the scores: several servers' strict modes reject "minimum"/"maximum"; the range is in the
# instructions and enforced by clamping (validate_grade).
class GradeReply(BaseModel):
    """Scores of one answer."""

    model_config = ConfigDict(extra="ignore")

    coherence: float = Field(strict=True, allow_inf_nan=False)
    correctness: float = Field(strict=True, allow_inf_nan=False)
    justification: str


GRADE_SCHEMA: dict[str, Any] = reply_schema(GradeReply)

SYSTEM = (
    "You grade students' short answers against an instructor's rubric. Judge two things, each as a "
    "number from 0.0 to 1.0:\n"
    "- coherence: is the answer logical, readable and well structured?\n"
    "- correctness: are the student's statements factually right and relevant to the question, as the "
    "reference answer and the key concepts define it? A fluent answer that says something wrong scores "
    "low here; an answer that is right in other words than the reference scores high.\n"
    "Give a one- or two-sentence justification naming what is right and what is missing or wrong.\n"
    'Reply with JSON only: {"coherence": <0..1>, "correctness": <0..1>, "justification": "<text>"}.'
)


def grade_messages(question: Question, answer_text: str) -> list[dict[str, Any]]:
    """Chat messages asking the model to grade one answer to ``question``."""
    lines = [f"Question: {question.text}", f"Reference answer: {question.reference_answer}"]
    if question.concepts:
        total = sum(c.weight for c in question.concepts) or 1.0
        lines.append("Key concepts (share of the credit):")
        lines += [f"- {c.label} ({c.weight / total:.0%})" for c in question.concepts]
    lines.append(f"Student answer: {answer_text}")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


@dataclass
class LLMGrade:
    """A validated reply: scores in [0, 1], S_LLM, and flags for anything that had to be repaired."""

    coherence: float
    correctness: float
    justification: str
    flags: list[str] = field(default_factory=list)

    @property
    def s_llm(self) -> float:
        return (self.coherence + self.correctness) / 2


def validate_grade(data: dict[str, Any]) -> LLMGrade:
    """Clamp out-of-range scores into [0, 1], flagging each one (the reply already fits GRADE_SCHEMA)."""
    flags: list[str] = []
    scores = {}
    for key in ("coherence", "correctness"):
        value = float(data[key])
        if not 0.0 <= value <= 1.0:
            flags.append(f"{key}_out_of_range:{value:g}")
            value = min(max(value, 0.0), 1.0)
        scores[key] = value
    justification = data["justification"].strip()
    if not justification:
        flags.append("empty_justification")
    return LLMGrade(coherence=scores["coherence"], correctness=scores["correctness"],
                    justification=justification, flags=flags)
