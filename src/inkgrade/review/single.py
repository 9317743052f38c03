"""The single-answer page's engine (Lanke et al.'s front end): one uploaded answer image and a rubric in,
transcription, points, matched and missing concepts and a justification out.

The image is read the way the pipeline reads an answer region (preprocess -> segment lines -> recognise)
and graded by the configured grader. The recogniser, the embedder and the grader are loaded once per app,
on first use or by :meth:`SingleAnswerEngine.load` (the server calls it in the background at start).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from omegaconf import DictConfig
from PIL import Image

from grading.graders import Grader
from grading.rubric import Answer, Question


def justification(details: dict[str, Any], question_max: float | None = None) -> str:
    """The grader's own justification where it gives one (the LLM grader), else one line built from
    the scores it combined, so every result says why it got its points."""
    if details.get("justification"):
        return str(details["justification"])
    if "empty_answer" in details.get("flags", []):
        return "empty answer"
    parts = []
    if "s_kg" in details:
        n_matched, n_missing = len(details.get("matches", [])), len(details.get("closest_missing", []))
        parts.append(f"rubric concepts covered {details['s_kg']:.2f} ({n_matched} of {n_matched + n_missing} "
                     f"matched at similarity >= {details.get('threshold', 0):.2f})")
    if "s_other" in details:
        parts.append(f"{details.get('other', 'other')} score {details['s_other']:.2f}")
    for key, label in (("s_semantic", "semantic score"), ("similarity", "similarity to the reference answer")):
        if key in details:
            parts.append(f"{label} {details[key]:.2f}")
    if "alpha" in details and "fraction" in details:
        parts.append(f"combined {details['alpha']:g} x concepts + {1 - details['alpha']:g} x "
                     f"{details.get('other', 'other')} = {details['fraction']:.2f}")
    elif "fraction" in details and not parts:
        parts.append(f"score {details['fraction']:.2f}")
    if question_max is not None and "fraction" in details:
        parts.append(f"of {question_max:g} points")
    return "; ".join(parts)


@dataclass
class SingleResult:
    question_id: str
    transcription: str
    lines: list[dict[str, Any]]
    points: float
    max_points: float
    matched: list[dict[str, str]]
    missing: list[dict[str, str]]
    justification: str
    grader: str
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def concept_labels(question: Question, ids: list[str]) -> list[dict[str, str]]:
    labels = {c.id: c.label for c in question.concepts}
    return [{"id": cid, "label": labels.get(cid, cid)} for cid in ids]


class SingleAnswerEngine:
    """Reads and grades one answer image; thread-safe (one answer at a time)."""

    def __init__(self, cfg: DictConfig):
        from htr.preprocess import PreprocessConfig
        from htr.segment import SegmenterConfig

        self.cfg = cfg
        self.pre_cfg = PreprocessConfig.from_dict(cfg.preprocess)
        self.seg_cfg = SegmenterConfig.from_dict(cfg.segmenter)
        self._lock = threading.Lock()
        self._recognizer = None
        self._grader: Grader | None = None

    @property
    def loaded(self) -> bool:
        return self._grader is not None

    def load(self) -> None:
        with self._lock:
            self._load()

    def _load(self) -> None:
        if self._grader is not None:
            return
        from grading.grade import embedder_from_config
        from grading.graders import build_grader
        from htr.recognize import build_recognizer

        self._recognizer = build_recognizer(self.cfg.recognizer)
        grader = build_grader(self.cfg.grader, embedder_from_config(self.cfg))
        # Graders load their language models on first use; one throwaway answer does it here, not in a request.
        warm = Question(id="warm_up", text="", max_points=1, granularity=1, reference_answer="warm up",
                        concepts=[{"id": "c", "label": "warm up", "weight": 1}])
        grader.grade(warm, [Answer(answer_id="warm_up", question_id="warm_up", text="warming up")])
        self._grader = grader

    def read(self, image: Image.Image) -> tuple[str, list[dict[str, Any]]]:
        """The answer's text and its line boxes (in the uploaded image's pixels)."""
        from htr.preprocess import preprocess
        from htr.segment import segment_lines

        gray = np.asarray(image.convert("L"))
        pre, scale = preprocess(gray, self.pre_cfg)
        boxes = segment_lines(pre, self.seg_cfg)
        crops = [Image.fromarray(b.crop(pre)) for b in boxes]
        texts = self._recognizer.recognize(crops) if crops else []
        lines = [{**{k: int(round(v / scale)) for k, v in b.as_dict().items()}, "text": t}
                 for b, t in zip(boxes, texts, strict=True)]
        return " ".join(t for t in texts if t).strip(), lines

    def grade(self, image: Image.Image, question: Question) -> SingleResult:
        with self._lock:
            t0 = time.perf_counter()
            self._load()
            t1 = time.perf_counter()
            text, lines = self.read(image)
            t2 = time.perf_counter()
            answer = Answer(answer_id="upload", question_id=question.id, text=text)
            if text:
                result = self._grader.grade(question, [answer])[0]
                points, matched, missing, details = result.points, result.matched, result.missing, result.details
            else:  # Wong: an empty answer scores 0 without asking the grader
                points, matched, missing = 0.0, [], [c.id for c in question.concepts]
                details = {"flags": ["empty_answer"]}
            t3 = time.perf_counter()
        return SingleResult(
            question_id=question.id, transcription=text, lines=lines, points=points,
            max_points=question.max_points, matched=concept_labels(question, matched),
            missing=concept_labels(question, missing),
            justification=justification(details, question.max_points), grader=self._grader.name,
            seconds={"load": round(t1 - t0, 3), "read": round(t2 - t1, 3), "grade": round(t3 - t2, 3),
                     "total": round(t3 - t0, 3)})
