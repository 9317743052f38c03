"""The page-grading prompt (Cvengros & Kortemeyer: a page image and its rubric, one JSON reply per page) and its reply.

The model lists the parts it found on the page as ``{problem_part, awarded_points, explanation}``. A bare
JSON array (Cvengros & Kortemeyer's format) is accepted as well as the ``{"grades": [...]}`` object that strict JSON-schema
output needs. With ``transcribe_first`` the model first writes down the handwriting (``transcription``), as
PrairieLearn's production grader asks. ``PROMPT_VERSION`` is part of the reply-cache key.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from grading.llm import image_part
from grading.rubric import Question

PROMPT_VERSION = "pages-v1"


class PartGrade(BaseModel):
    model_config = ConfigDict(extra="ignore")

    problem_part: str
    awarded_points: float = Field(strict=True, allow_inf_nan=False)
    explanation: str

    @field_validator("problem_part", mode="before")
    @classmethod
    def _part_as_text(cls, value: Any) -> Any:
        # Models write part "3" as the number 3.
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class PageReply(BaseModel):
    """The parts graded on one page."""

    model_config = ConfigDict(extra="ignore")

    grades: list[PartGrade]

    @model_validator(mode="before")
    @classmethod
    def _bare_array(cls, value: Any) -> Any:
        return {"grades": value} if isinstance(value, list) else value


class TranscribedPageReply(BaseModel):
    """The page's handwriting, then the parts graded on it (in this order, so the model writes it first)."""

    model_config = ConfigDict(extra="ignore")

    transcription: str
    grades: list[PartGrade]


SYSTEM = (
    "You grade one handwritten exam page against the instructor's rubric. The first image is the student's "
    "page.{rubric_image} Find each problem part of the rubric that is answered on this page and award points "
    "for it as the rubric says: never more than the part's maximum, never fewer than 0. Leave out parts that "
    "are not on this page. Name each part exactly as the rubric does, and explain each award in one or two "
    "sentences.{transcribe}\n"
    'Reply with JSON only: {{{transcription_key}"grades": [{{"problem_part": "<part>", "awarded_points": '
    '<number>, "explanation": "<text>"}}, ...]}}.'
)


def render_rubric(questions: list[Question]) -> str:
    """The rubric of the given parts as text: id, points, question, reference answer, credit shares."""
    blocks = []
    for q in questions:
        lines = [f"Part {q.id} (maximum {q.max_points:g} points, in steps of {q.granularity:g}): {q.text}",
                 f"Reference answer: {q.reference_answer}"]
        if q.concepts:
            total = sum(c.weight for c in q.concepts) or 1.0
            lines.append("Credit:")
            lines += [f"- {c.label}: {q.max_points * c.weight / total:g} points" for c in q.concepts]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def page_messages(page_image: tuple[bytes, str], label: str, questions: list[Question], whole_rubric: bool,
                  rubric_image: tuple[bytes, str] | None, transcribe_first: bool) -> list[dict[str, Any]]:
    """Chat messages for one page. ``label`` names the page without naming the student (a pseudonym).

    ``questions`` are the parts on the page (``whole_rubric``: every part, the page may hold any of them).
    With a rubric page image the text only names the parts and their maxima; else it is the rubric itself."""
    system = SYSTEM.format(
        rubric_image=" The second image is the rubric page for it." if rubric_image else "",
        transcribe=(" Before grading, transcribe all handwriting on the page (text, formulas, labels of "
                    "sketches) into \"transcription\", and grade from it and the image." if transcribe_first else ""),
        transcription_key='"transcription": "<text>", ' if transcribe_first else "")
    heading = "Rubric (grade only the parts answered on this page)" if whole_rubric else "Rubric of this page"
    if rubric_image is not None:
        body = "\n".join(f"- {q.id}: maximum {q.max_points:g} points" for q in questions)
        heading = "Parts (the rubric page image says how to award them)"
    else:
        body = render_rubric(questions)
    content: list[dict[str, Any]] = [{"type": "text", "text": f"{label}.\n{heading}:\n\n{body}"},
                                     image_part(page_image[0], mime=page_image[1], detail="high")]
    if rubric_image is not None:
        content.append(image_part(rubric_image[0], mime=rubric_image[1], detail="high"))
    return [{"role": "system", "content": system}, {"role": "user", "content": content}]
