"""Lanke et al.'s LLM reasoning module as a grader: S_LLM = mean(coherence, correctness), scaled to points.

When the model gives no usable reply for an answer (still malformed after the retries, or the
server failing on it after the retries), the answer gets 0 points, ``fraction`` 0, ``s_llm`` None,
a ``llm_failed:...`` flag and ``needs_review: true`` so it goes to a person; the run goes on. When
``max_consecutive_failures`` requests in a row find the server unavailable, the endpoint is taken to
be down or misconfigured and the run stops with a one-line error before recording the current chunk:
finished chunks are kept, and a rerun resumes there (cached replies cost nothing).
An empty answer scores 0 without a request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grading.graders.base import Grader, GradeResult
from grading.llm import PROMPT_VERSION, GradeReply, LLMClient, grade_messages, load_settings, validate_grade
from grading.rubric import Answer, Question
from grading.scoring import to_points
from inkbase.errors import ConfigError, check_range


class LLMGrader(Grader):
    def __init__(self, llm: dict[str, Any], cache_dir: str | Path | None, max_consecutive_failures: int,
                 progress: bool, name: str = "llm", client: LLMClient | None = None):
        self.name = name
        self.max_consecutive_failures = int(check_range("grader.max_consecutive_failures",
                                                        max_consecutive_failures, 1, 10_000))
        self.client = client or LLMClient(load_settings(llm), cache_dir, PROMPT_VERSION)
        self.progress = progress
        self._unavailable_streak = 0

    def usage_summary(self) -> dict[str, Any]:
        """Requests, cache hits, tokens and cost so far (for the run's metrics.json)."""
        s = self.client.settings
        return {"provider": s.provider, "model": s.model, "prompt_version": PROMPT_VERSION,
                **self.client.usage.as_dict()}

    def grade(self, question: Question, answers: list[Answer]) -> list[GradeResult]:
        todo = [i for i, a in enumerate(answers) if a.text.strip()]
        replies = self.client.chat_many([(grade_messages(question, answers[i].text), GradeReply) for i in todo],
                                        progress=self.progress)
        self._check_streak(replies)
        by_index = dict(zip(todo, replies, strict=True))
        results = []
        for i in range(len(answers)):
            reply = by_index.get(i)
            if reply is None:
                details = {"fraction": 0.0, "s_llm": 0.0, "coherence": 0.0, "correctness": 0.0,
                           "justification": "empty answer", "flags": ["empty_answer"]}
            elif not reply.ok:
                details = {"fraction": 0.0, "s_llm": None, "coherence": None, "correctness": None,
                           "justification": "", "flags": [f"llm_failed:{reply.kind}: {reply.error}"],
                           "needs_review": True}
            else:
                g = validate_grade(reply.data)
                details = {"fraction": round(g.s_llm, 6), "s_llm": round(g.s_llm, 6), "coherence": g.coherence,
                           "correctness": g.correctness, "justification": g.justification, "flags": g.flags,
                           "cached": reply.cached}
                if g.flags:
                    details["needs_review"] = True
            results.append(GradeResult(points=to_points(details["fraction"], question.max_points,
                                                        question.granularity),
                                       max_points=question.max_points, details=details))
        return results

    def _check_streak(self, replies: list) -> None:
        for reply in replies:
            self._unavailable_streak = self._unavailable_streak + 1 if reply.kind == "unavailable" else 0
            if self._unavailable_streak >= self.max_consecutive_failures:
                raise ConfigError("llm.base_url", f"{self._unavailable_streak} requests in a row to "
                                  f"{self.client.settings.url} failed after retries ({reply.error}); the "
                                  f"current chunk was not recorded, rerun to resume")
