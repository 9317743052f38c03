"""An OpenAI-compatible chat server that answers from recorded replies (``scripts/serve_recorded_replies.py``).

It grades nothing: it lets page grading, its retries and its analysis run end to end without a model. The
replies file is JSONL, one line per page image::

    {"image_sha256": "<sha256 of the page's data URL>", "replies": [<entry>, ...]}

and the n-th request carrying that page image gets entry n (the last one once they run out). An entry is
``{"content": "<reply text>", "usage": {"prompt_tokens": .., "completion_tokens": ..}}``, or an HTTP error
``{"status": 429, "headers": {"Retry-After": "1"}, "body": {...}}``. A line with ``"image_sha256": "*"``
answers pages that have no line of their own; other pages get HTTP 400. The page image is the first image in
the request's last message; :func:`image_sha256` computes its key from the bytes that grading sends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from omegaconf import DictConfig

from inkbase.errors import ConfigError, InputError
from inkbase.jsonio import iter_jsonl_objects
from inkbase.runs import hydra_output_dir, start_run

log = logging.getLogger(__name__)

ANY = "*"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def image_sha256(data: bytes, mime: str) -> str:
    """The key of a page image as grading sends it (a base64 data URL)."""
    url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return hashlib.sha256(url.encode("ascii")).hexdigest()


def request_image_key(body: dict[str, Any]) -> str | None:
    content = (body.get("messages") or [{}])[-1].get("content")
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                return hashlib.sha256(part["image_url"]["url"].encode("ascii")).hexdigest()
    return None


def load_recorded(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for line, rec in iter_jsonl_objects(path):
        key, replies = rec.get("image_sha256"), rec.get("replies")
        if not isinstance(key, str) or not isinstance(replies, list) or not replies:
            raise InputError(path, f"line {line}", 'needs "image_sha256" (text) and "replies" (a non-empty list)')
        out[key] = replies
    return out


class Recorded:
    """The replies and what was asked of them (request bodies as sent, requests per page)."""

    def __init__(self, replies: dict[str, list[dict[str, Any]]]):
        self.replies = replies
        self.seen: Counter[str] = Counter()
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()

    def answer(self, raw: bytes) -> JSONResponse:
        body = json.loads(raw)
        key = request_image_key(body) or ""
        with self.lock:
            self.bodies.append(raw)
            n = self.seen[key]
            self.seen[key] += 1
        entries = self.replies.get(key) or self.replies.get(ANY)
        if entries is None:
            return JSONResponse({"error": {"message": "no recorded reply for this page image"}}, status_code=400)
        entry = entries[min(n, len(entries) - 1)]
        if "status" in entry:
            return JSONResponse(entry.get("body", {"error": {"message": "recorded error"}}),
                                status_code=int(entry["status"]), headers=entry.get("headers"))
        usage = {"prompt_tokens": 0, "completion_tokens": 0, **entry.get("usage", {})}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return JSONResponse({
            "id": f"recorded-{key[:12]}-{n}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "recorded"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": entry["content"]}}],
            "usage": usage})


def make_app(recorded: Recorded, token: str | None = None) -> FastAPI:
    app = FastAPI(title="recorded replies")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        if token is not None and not hmac.compare_digest(request.headers.get("authorization", ""),
                                                         f"Bearer {token}"):
            return JSONResponse({"error": {"message": "wrong or missing token"}}, status_code=401)
        return recorded.answer(await request.body())

    return app


class ReplayServer:
    """The app on ``host:port`` in a background thread (``port=0``: any free port); a context manager."""

    def __init__(self, replies: dict[str, list[dict[str, Any]]], host: str = "127.0.0.1", port: int = 0):
        self.recorded = Recorded(replies)
        config = uvicorn.Config(make_app(self.recorded), host=host, port=port, log_level="warning",
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> ReplayServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the recorded-reply server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve(cfg: DictConfig) -> dict[str, Any]:
    """``scripts/serve_recorded_replies.py``: serve until interrupted (Ctrl-C / SIGTERM), then record what
    was asked in the run folder's metrics.json."""
    replies = load_recorded(cfg.replies)
    token = os.environ.get(cfg.token_env) if cfg.token_env else None
    if cfg.host not in LOOPBACK and not token:
        raise ConfigError("token_env", f"serving on {cfg.host} needs a token: set token_env to an environment "
                                       f"variable that holds one")
    folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
    recorded = Recorded(replies)
    server = uvicorn.Server(uvicorn.Config(make_app(recorded, token), host=cfg.host, port=int(cfg.port),
                                           log_level="warning", lifespan="off"))
    log.info("serving %d recorded pages on http://%s:%s/v1", len(replies), cfg.host, cfg.port)
    server.run()
    metrics = {"pages_recorded": len(replies), "requests": len(recorded.bodies),
               "pages_asked": len(recorded.seen)}
    folder.finish(metrics)
    return metrics
