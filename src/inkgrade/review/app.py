"""The review app: FastAPI, server-rendered pages, a JSON API that the pages use and tests call.

Pages: ``/`` (questions, progress, the completion check), ``/review/<question_id>`` (one question across
all students, keyboard only, most doubtful first), ``/single`` (grade one uploaded answer image).

API::

    GET  /api/questions                    questions with progress counts
    GET  /api/items?question=<id>          that question's items, most doubtful first
    POST /api/items/<answer_id>            {"points": p, "version": v} -> reviewed; {"status": "skipped",
                                           "version": v} -> skipped; 409 on a stale version (nothing
                                           changes), 422 for points outside [0, max] or off the granularity
    GET  /api/audit?answer_id=<id>         every change to that item (who, when, old, new)
    GET  /api/completion                   unreviewed items, students with missing pages, unmatched pages
    POST /api/grade                        multipart image + rubric (+ question_id) -> the single-answer result
    GET  /files/<path>                     an image under exam_dir (never anything outside it)

Security: without a token only loopback host names are served; with one, every request must carry it
(``X-Inkgrade-Token`` header, ``Authorization: Bearer``, or the cookie a ``?token=`` login sets).
"""

from __future__ import annotations

import getpass
import hmac
import io
import json
import math
import threading
import warnings
from collections import defaultdict
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ValidationError
from starlette.middleware.trustedhost import TrustedHostMiddleware

from grading.rubric import Question, Rubric
from inkgrade.review.single import SingleAnswerEngine, justification
from inkgrade.store import ExamStore, Item, StaleVersion

HERE = Path(__file__).resolve().parent
TOKEN_ENV = "INKGRADE_REVIEW_TOKEN"
TOKEN_HEADER = "X-Inkgrade-Token"
TOKEN_COOKIE = "inkgrade_token"
REVIEWER_HEADER = "X-Inkgrade-Reviewer"
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif"}
# Raster formats only: Pillow would otherwise hand EPS uploads to Ghostscript.
UPLOAD_FORMATS = ["PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF"]
EMPTY_ANSWER_REVIEWER = "inkgrade (empty answer)"
TODO = ("unreviewed", "skipped")


@dataclass
class ReviewSettings:
    token: str | None = None
    reviewer: str | None = None
    max_upload_bytes: int = 10 * 1024 * 1024
    # Without a token, only these Host headers are answered (a web page elsewhere cannot rebind to us).
    allowed_hosts: tuple[str, ...] = tuple(LOOPBACK_NAMES)


class Review(BaseModel):
    version: int
    points: float | None = None
    status: Literal["reviewed", "skipped"] = "reviewed"


def safe_path(root: Path, relative: str) -> Path | None:
    """``root / relative`` if it is an image file inside ``root`` (after resolving ``..`` and links)."""
    if not relative or "\x00" in relative:
        return None
    if PurePosixPath(relative).is_absolute() or PureWindowsPath(relative).is_absolute() or PureWindowsPath(relative).drive:
        return None
    base = root.resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base) or target.suffix.lower() not in IMAGE_SUFFIXES or not target.is_file():
        return None
    return target


def points_problem(points: float, max_points: float, granularity: float) -> str | None:
    if not math.isfinite(points) or points < 0 or points > max_points + 1e-9:
        return f"points {points:g} are outside [0, {max_points:g}]"
    if granularity > 0:
        steps = points / granularity
        if abs(steps - round(steps)) > 1e-6:
            return f"points {points:g} are not a multiple of {granularity:g}"
    return None


def file_url(path: str | None) -> str | None:
    return None if not path else "/files/" + quote(str(path))


def concept_list(entries: Any, labels: dict[str, str], spans: dict[str, str]) -> list[dict[str, str]]:
    out = []
    for entry in entries or []:
        if isinstance(entry, dict):
            cid = str(entry["id"])
            label, span = labels.get(cid, entry.get("label", cid)), spans.get(cid, entry.get("span", ""))
        else:
            cid = str(entry)
            label, span = labels.get(cid, cid), spans.get(cid, "")
        out.append({"id": cid, "label": label, "span": span})
    return out


def score_empty_answers(store: ExamStore) -> int:
    """Wong: an answer with nothing written scores 0 without review (status ``auto``, audited)."""
    rows = store.conn.execute(
        "SELECT answer_id, version FROM items WHERE status = 'unreviewed' AND points IS NULL "
        "AND kind = 'answer' AND TRIM(transcription) = ''").fetchall()
    scored = 0
    for row in rows:
        try:
            store.set_points(row["answer_id"], 0.0, row["version"], EMPTY_ANSWER_REVIEWER, status="auto")
            scored += 1
        except StaleVersion:  # a reviewer got there first
            continue
    return scored


class ReviewService:
    """The store behind one lock: endpoints run in a thread pool and share one SQLite connection."""

    def __init__(self, store: ExamStore):
        self.store = store
        self.lock = threading.Lock()
        self.labels = self._concept_labels()

    def _concept_labels(self) -> dict[str, dict[str, str]]:
        """Concept labels per question from the rubric the exam was graded with, where the store names it."""
        from grading.rubric import load_rubric
        from inkbase.errors import InputError

        path = self.store.meta("rubric")
        if not isinstance(path, str):
            return {}
        path = Path(path) if Path(path).is_absolute() else self.store.exam_dir / path
        try:
            rubric = load_rubric(path)
        except (InputError, OSError):
            return {}
        return {q.id: {c.id: c.label for c in q.concepts} for q in rubric.questions}

    def question(self, question_id: str) -> dict[str, Any] | None:
        with self.lock:
            return next((q for q in self.store.questions() if q["question_id"] == question_id), None)

    def questions(self) -> list[dict[str, Any]]:
        with self.lock:
            counts: dict[str, dict[str, int]] = defaultdict(dict)
            for r in self.store.conn.execute(
                    "SELECT question_id, status, COUNT(*) AS n FROM items GROUP BY question_id, status"):
                counts[r["question_id"]][r["status"]] = r["n"]
            out = []
            for q in self.store.questions():
                c = counts.get(q["question_id"], {})
                total = sum(c.values())
                done = c.get("reviewed", 0) + c.get("auto", 0)
                out.append({**q, "n_items": total, "n_done": done, "n_reviewed": c.get("reviewed", 0),
                            "n_auto": c.get("auto", 0), "n_skipped": c.get("skipped", 0),
                            "n_unreviewed": c.get("unreviewed", 0)})
            return out

    def item_json(self, item: Item) -> dict[str, Any]:
        d = item.details
        labels = self.labels.get(item.question_id, {})
        spans = {m["id"]: m.get("span", "") for m in d.get("matches", []) if isinstance(m, dict)}
        matched = d.get("matched", [m["id"] for m in d.get("matches", []) if isinstance(m, dict)])
        missing = d.get("missing", [m["id"] for m in d.get("closest_missing", []) if isinstance(m, dict)])
        page = self.store.page(item.page_id) if item.page_id is not None else None
        return {
            "answer_id": item.answer_id, "student_id": item.student_id, "question_id": item.question_id,
            "kind": item.kind, "ai_points": item.ai_points, "points": item.points, "max_points": item.max_points,
            "granularity": item.granularity, "status": item.status, "version": item.version,
            "risk": item.risk, "risk_reason": item.risk_reason, "transcription": item.transcription,
            "matched": concept_list(matched, labels, spans), "missing": concept_list(missing, labels, {}),
            "justification": justification(d) if d else "", "flags": d.get("flags", []),
            "crop_url": file_url(item.crop), "page_url": file_url(page["image"]) if page else None,
            "page_id": item.page_id, "updated_at": item.updated_at,
        }

    def items(self, question_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [self.item_json(i) for i in self.store.items(question_id=question_id, order="risk")]

    def review(self, answer_id: str, body: Review, who: str) -> dict[str, Any]:
        with self.lock:
            item = self.store.item(answer_id)
            if item is None:
                raise HTTPException(404, f"no item {answer_id!r}")
            if body.status == "skipped":
                points = item.points
            else:
                if body.points is None:
                    raise HTTPException(422, "points are required")
                problem = points_problem(body.points, item.max_points, item.granularity)
                if problem:
                    raise HTTPException(422, problem)
                points = float(body.points)
            try:
                return self.item_json(self.store.set_points(answer_id, points, body.version, who, status=body.status))
            except StaleVersion as err:
                current = self.item_json(self.store.item(answer_id))
                raise HTTPException(409, {"message": str(err), "current": current}) from None

    def audit(self, answer_id: str) -> list[dict[str, Any]]:
        with self.lock:
            if self.store.item(answer_id) is None:
                raise HTTPException(404, f"no item {answer_id!r}")
            return self.store.audit(answer_id)

    def completion(self) -> dict[str, Any]:
        with self.lock:
            todo: dict[str, list[str]] = defaultdict(list)
            for r in self.store.conn.execute(
                    "SELECT i.question_id, i.answer_id FROM items i LEFT JOIN questions q USING (question_id) "
                    "WHERE i.status IN (?, ?) ORDER BY q.position, i.question_id, i.answer_id", TODO):
                todo[r["question_id"]].append(r["answer_id"])
            pages = self.store.pages()
            expected = sorted({p["template_page"] for p in pages if p["template_page"] is not None})
            have: dict[str, set[str]] = defaultdict(set)
            for p in pages:
                if p["status"] == "assigned" and p["student_id"]:
                    have[p["student_id"]].add(p["template_page"])
            missing_pages = [{"student_id": s["student_id"], "name": s["name"],
                              "missing": [t for t in expected if t not in have[s["student_id"]]]}
                             for s in self.store.students() if any(t not in have[s["student_id"]] for t in expected)]
            unmatched = [{"page_id": p["page_id"], "source": p["source"], "image_url": file_url(p["image"]),
                          "id_read": p["id_read"], "id_score": p["id_score"], "problem": p["problem"]}
                         for p in pages if p["status"] == "needs_identity"]
            unreadable = [{"page_id": p["page_id"], "source": p["source"], "problem": p["problem"]}
                          for p in pages if p["status"] == "unreadable"]
        n_todo = sum(len(v) for v in todo.values())
        return {"complete": not (n_todo or missing_pages or unmatched or unreadable),
                "unreviewed": {"count": n_todo, "by_question": dict(todo)},
                "missing_pages": missing_pages, "unmatched_pages": unmatched, "unreadable_pages": unreadable}


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def create_app(store: ExamStore, settings: ReviewSettings | None = None,
               engine: SingleAnswerEngine | None = None, on_stop: Callable[[], None] | None = None) -> FastAPI:
    """The app over an open store. ``engine`` grades the single-answer page's uploads (none: that page
    answers 503); ``on_stop`` runs when the server shuts down."""
    settings = settings or ReviewSettings()
    score_empty_answers(store)
    service = ReviewService(store)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        if on_stop is not None:
            on_stop()

    app = FastAPI(title="inkgrade review", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.service = service
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    exam_name = store.meta("exam_id") or store.exam_dir.resolve().name

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        token = settings.token
        if token is None:
            return await call_next(request)
        given = request.query_params.get("token")
        if given is not None:
            if not _same(given, token):
                return JSONResponse({"detail": "wrong token"}, status_code=401)
            # Log in once: the token moves into a cookie and out of the address bar and history.
            target = request.url.remove_query_params("token")
            response = RedirectResponse(target.path + (f"?{target.query}" if target.query else ""), status_code=303)
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return response
        sent = request.headers.get(TOKEN_HEADER) or request.cookies.get(TOKEN_COOKIE) or ""
        auth = request.headers.get("authorization", "")
        if not sent and auth.lower().startswith("bearer "):
            sent = auth[7:].strip()
        if sent and _same(sent, token):
            return await call_next(request)
        return JSONResponse({"detail": f"a token is required ({TOKEN_HEADER} header, or open /?token=...)"},
                            status_code=401)

    if settings.token is None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def reviewer(request: Request) -> str:
        return (request.headers.get(REVIEWER_HEADER) or settings.reviewer or getpass.getuser())[:100]

    # ------------------------------------------------------------ pages
    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        return templates.TemplateResponse(request, "index.html", {
            "exam": exam_name, "questions": service.questions(), "completion": service.completion(),
            "reviewer": reviewer(request)})

    @app.get("/review/{question_id}", response_class=HTMLResponse)
    def review_page(request: Request, question_id: str):
        questions = service.questions()
        current = next((q for q in questions if q["question_id"] == question_id), None)
        if current is None:
            raise HTTPException(404, f"no question {question_id!r}")
        return templates.TemplateResponse(request, "review.html", {
            "exam": exam_name, "questions": questions, "question": current, "reviewer": reviewer(request)})

    @app.get("/single", response_class=HTMLResponse)
    def single_page(request: Request):
        return templates.TemplateResponse(request, "single.html", {
            "exam": exam_name, "max_upload_mb": settings.max_upload_bytes / 2**20, "reviewer": reviewer(request)})

    @app.get("/files/{path:path}")
    def files(path: str):
        target = safe_path(store.exam_dir, path)
        if target is None:
            raise HTTPException(404, "not found")
        return FileResponse(target)

    # ------------------------------------------------------------ API
    @app.get("/api/questions")
    def api_questions():
        return service.questions()

    @app.get("/api/items")
    def api_items(question: Annotated[str, Query()]):
        if service.question(question) is None:
            raise HTTPException(404, f"no question {question!r}")
        return service.items(question)

    @app.post("/api/items/{answer_id}")
    def api_review(answer_id: str, body: Review, request: Request):
        return service.review(answer_id, body, reviewer(request))

    @app.get("/api/audit")
    def api_audit(answer_id: Annotated[str, Query()]):
        return service.audit(answer_id)

    @app.get("/api/completion")
    def api_completion():
        return service.completion()

    @app.post("/api/grade")
    def api_grade(request: Request, image: Annotated[UploadFile, File()], rubric: Annotated[UploadFile, File()],
                  question_id: Annotated[str | None, Form()] = None):
        limit = settings.max_upload_bytes
        if int(request.headers.get("content-length") or 0) > 2 * limit + 65536:
            raise HTTPException(413, f"upload larger than {limit / 2**20:g} MB")
        question = parse_rubric(read_limited(rubric, limit, "rubric"), question_id)
        picture = open_image(read_limited(image, limit, "image"))
        if engine is None:
            raise HTTPException(503, "this server has no recogniser and grader loaded")
        return engine.grade(picture, question).as_dict()

    return app


def read_limited(upload: UploadFile, limit: int, name: str) -> bytes:
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"{name}: larger than {limit / 2**20:g} MB")
    if not data:
        raise HTTPException(422, f"{name}: empty file")
    return data


def open_image(data: bytes) -> Image.Image:
    """The decoded upload; 422 for anything Pillow cannot decode as a raster image (or a decompression bomb)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            picture = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
            picture.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError,
            SyntaxError, ValueError) as err:
        raise HTTPException(422, f"image: not a readable image ({type(err).__name__})") from None
    return picture


def parse_rubric(data: bytes, question_id: str | None) -> Question:
    """One question of an uploaded rubric (a whole rubric file or a single question object)."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HTTPException(422, f"rubric: not JSON ({err})") from None
    try:
        if isinstance(obj, dict) and "questions" in obj:
            questions = Rubric.model_validate(obj).questions
        else:
            questions = [Question.model_validate(obj)]
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise HTTPException(422, f"rubric: {where}: {first['msg']}") from None
    if not question_id:
        return questions[0]
    for q in questions:
        if q.id == question_id:
            return q
    raise HTTPException(422, f"rubric: no question {question_id!r} (has {', '.join(q.id for q in questions)})")
