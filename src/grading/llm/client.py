"""One client for any OpenAI-compatible ``/chat/completions`` endpoint, with JSON replies.

- Replies are requested as strict JSON-schema output (``response_format``); a server that rejects
  that (HTTP 400 naming ``response_format``) is asked again in ``json_object`` mode for the rest of the run.
- 429, 5xx, timeouts and dropped connections are retried with exponential backoff and full jitter,
  waiting at least what ``Retry-After`` asks; a reply that is not valid JSON for the schema is retried too.
- 401/403/404 mean a wrong key, model or URL: they raise :class:`ConfigError` at once.
- ``chat_many`` runs requests in a thread pool of ``concurrency`` workers.
- Every valid reply is written to an sqlite cache the moment it arrives, keyed by
  sha256(prompt version, base URL, model, temperature, max_tokens, messages, schema); a rerun, an
  ablation sweep or a resumed run asks the server only for what is not cached. Failures are not cached.
- Token use, requests, cache hits and cost are counted in :class:`Usage`.

Messages are passed through unchanged, so a vision message (``image_part``) works like a text one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from grading.cache import SqliteCache
from grading.llm.settings import LLMSettings
from inkbase.errors import ConfigError

log = logging.getLogger(__name__)

Messages = list[dict[str, Any]]


@dataclass
class Usage:
    """What a client spent: HTTP requests (retries included), cache hits, tokens and cost."""

    calls: int = 0
    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    failures: int = 0
    invalid_replies: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cost_usd"] = round(self.cost_usd, 6)
        return out


@dataclass
class ChatReply:
    """A parsed JSON reply (``data``), or why there is none (``error``; ``kind`` = unavailable | invalid | rejected)."""

    data: dict[str, Any] | None
    text: str | None = None
    cached: bool = False
    error: str | None = None
    kind: str | None = None
    attempts: int = 0
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.data is not None


class ReplyCache(SqliteCache):
    """Valid replies keyed by request hash."""

    def __init__(self, path: str | Path):
        super().__init__(path, "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, reply TEXT, "
                               "created REAL)")

    def get(self, key: str) -> dict | None:
        rows = list(self._select_keys("SELECT reply FROM replies WHERE key IN ({marks})", [key]))
        return json.loads(rows[0][0]) if rows else None

    def put(self, key: str, model: str, reply: dict) -> None:
        self._write("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?)",
                    [(key, model, json.dumps(reply, ensure_ascii=False), time.time())])


def image_part(image: bytes | str | Path, mime: str = "image/png", detail: str = "auto") -> dict[str, Any]:
    """A message content part carrying an image as a data URI (for vision models)."""
    data = Path(image).read_bytes() if isinstance(image, (str, Path)) else image
    url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return {"type": "image_url", "image_url": {"url": url, "detail": detail}}


def check_schema(data: Any, schema: dict[str, Any]) -> str | None:
    """Why ``data`` does not fit the top level of ``schema`` (required keys, primitive types), or None.

    Written out because the schemas used here are flat; a full validator would be a new dependency."""
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    props = schema.get("properties", {})
    missing = [k for k in schema.get("required", []) if k not in data]
    if missing:
        return f"missing key(s) {missing}"
    for key, spec in props.items():
        if key not in data:
            continue
        value, kind = data[key], spec.get("type")
        if kind == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                 or not math.isfinite(value)):
            return f"{key} is not a finite number: {value!r}"
        if kind == "string" and not isinstance(value, str):
            return f"{key} is not a string: {value!r}"
    return None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class LLMClient:
    """Chat completions with JSON replies, retries, a concurrency limit, a reply cache and usage accounting."""

    def __init__(self, settings: LLMSettings, cache_dir: str | Path | None, prompt_version: str,
                 sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        self.prompt_version = prompt_version
        self._sleep = sleep
        headers = {"Content-Type": "application/json", **settings.auth_headers(), **settings.headers}
        self._http = httpx.Client(timeout=httpx.Timeout(settings.timeout_s), headers=headers,
                                  params=settings.query or None)
        self.cache = ReplyCache(Path(cache_dir) / "llm_replies.sqlite") if settings.cache and cache_dir else None
        self.usage = Usage()
        self._lock = threading.Lock()
        self._format = settings.response_format

    def close(self) -> None:
        self._http.close()

    def cache_key(self, messages: Messages, schema: dict[str, Any]) -> str:
        s = self.settings
        blob = json.dumps({"prompt_version": self.prompt_version, "base_url": s.base_url.rstrip("/"),
                           "model": s.model, "temperature": s.temperature, "max_tokens": s.max_tokens,
                           "messages": messages, "schema": schema}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _body(self, messages: Messages, schema: dict[str, Any], schema_name: str) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {"model": s.model, "messages": messages, "temperature": s.temperature,
                                "max_tokens": s.max_tokens}
        if self._format == "json_schema":
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": schema_name, "strict": True, "schema": schema}}
        elif self._format == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    def _backoff(self, attempt: int, floor: float | None) -> float:
        s = self.settings
        wait = random.uniform(0, s.backoff_s * 2 ** attempt)
        if floor is not None:
            wait = max(wait, floor)
        return min(wait, s.backoff_max_s)

    def _count(self, **deltas: float) -> None:
        with self._lock:
            for key, value in deltas.items():
                setattr(self.usage, key, getattr(self.usage, key) + value)

    def chat(self, messages: Messages, schema: dict[str, Any], schema_name: str = "reply") -> ChatReply:
        """One JSON reply for ``messages`` (from the cache when there), validated against ``schema``."""
        self._count(calls=1)
        key = self.cache_key(messages, schema)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self._count(cache_hits=1)
                return ChatReply(data=hit["data"], text=hit["text"], cached=True, usage=hit.get("usage", {}))
        s = self.settings
        error, kind, attempts = "no attempt made", "unavailable", 0
        for attempt in range(s.max_retries + 1):
            if attempt:
                self._count(retries=1)
            attempts += 1
            body = self._body(messages, schema, schema_name)
            try:
                response = self._http.post(s.url, json=body)
            except httpx.TimeoutException:
                self._count(requests=1)
                error, kind = f"timed out after {s.timeout_s}s", "unavailable"
                self._sleep(self._backoff(attempt, None))
                continue
            except httpx.TransportError as err:
                self._count(requests=1)
                error, kind = f"connection failed ({type(err).__name__}: {err})", "unavailable"
                self._sleep(self._backoff(attempt, None))
                continue
            self._count(requests=1)
            code = response.status_code
            if code == 429 or code >= 500:
                error, kind = f"HTTP {code}", "unavailable"
                self._sleep(self._backoff(attempt, _retry_after(response)))
                continue
            if code == 400 and self._format == "json_schema" and "response_format" in response.text:
                log.warning("%s rejects json_schema replies; falling back to json_object", s.base_url)
                self._format = "json_object"
                continue
            if code in (401, 403):
                raise ConfigError("llm.api_key_env", f"{s.url} refused the key in {s.api_key_env} (HTTP {code})")
            if code == 404:
                raise ConfigError("llm.model", f"{s.url} answered 404 for model {s.model!r} "
                                               f"(check llm.base_url and llm.model)")
            if code >= 400:
                return ChatReply(data=None, error=f"HTTP {code}: {response.text[:200]}", kind="rejected",
                                 attempts=attempts)
            text, usage, problem = self._parse(response)
            if problem is None:
                data = json.loads(text)
                problem = check_schema(data, schema)
            if problem is not None:
                self._count(invalid_replies=1)
                error, kind = f"invalid reply: {problem}", "invalid"
                continue
            reply = {"data": data, "text": text, "usage": usage}
            if self.cache is not None:
                self.cache.put(key, s.model, reply)
            return ChatReply(data=data, text=text, attempts=attempts, usage=usage)
        self._count(failures=1)
        return ChatReply(data=None, error=error, kind=kind, attempts=attempts)

    def _parse(self, response: httpx.Response) -> tuple[str | None, dict[str, int], str | None]:
        """(content, token usage, problem) from a 2xx reply; tokens are billed even when content is bad."""
        try:
            payload = response.json()
        except ValueError:
            return None, {}, "response body is not JSON"
        usage = payload.get("usage") or {} if isinstance(payload, dict) else {}
        tokens = {"prompt_tokens": int(usage.get("prompt_tokens") or 0),
                  "completion_tokens": int(usage.get("completion_tokens") or 0)}
        s = self.settings
        self._count(prompt_tokens=tokens["prompt_tokens"], completion_tokens=tokens["completion_tokens"],
                    cost_usd=tokens["prompt_tokens"] / 1000 * s.price_in_per_1k
                    + tokens["completion_tokens"] / 1000 * s.price_out_per_1k)
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return None, tokens, "no choices[0].message.content"
        if not isinstance(content, str):
            return None, tokens, "message content is not text"
        text = _strip_fence(content)
        try:
            json.loads(text)
        except ValueError as err:
            return None, tokens, f"content is not JSON ({err})"
        return text, tokens, None

    def chat_many(self, requests: Sequence[tuple[Messages, dict[str, Any]]], schema_name: str = "reply",
                  progress: bool = False) -> list[ChatReply]:
        """``chat`` for each (messages, schema), at most ``concurrency`` in flight; results in input order."""
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
            futures = [pool.submit(self.chat, m, s, schema_name) for m, s in requests]
            return [f.result() for f in tqdm(futures, desc="llm", unit="req", disable=not progress)]


def _strip_fence(content: str) -> str:
    # json_object/none modes sometimes wrap JSON in a Markdown code fence.
    text = content.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()
