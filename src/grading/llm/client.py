"""One client for any OpenAI-compatible ``/chat/completions`` endpoint, with JSON replies validated by pydantic.

Built on the ``openai`` SDK (``AsyncOpenAI``; ``AsyncAzureOpenAI`` when ``auth: api-key``):

- the SDK retries 429, 408/409, 5xx, timeouts and dropped connections ``max_retries`` times with
  exponential backoff and jitter, waiting what ``Retry-After`` asks (up to two minutes);
- replies are requested as strict JSON-schema output (the schema is the reply model's); a server that
  rejects that (HTTP 400 naming ``response_format``) is asked again in ``json_object`` mode for the rest
  of the run; a reply that is not valid JSON for the reply model is asked for again, up to ``max_retries``
  times;
- 401/403/404 mean a wrong key, model or URL: they raise :class:`ConfigError` at once;
- ``chat_many`` keeps at most ``concurrency`` requests in flight and hands each reply to ``on_reply`` as
  it arrives, so a caller can persist it before the rest are done;
- every valid reply is written to an sqlite cache the moment it arrives, keyed by sha256(prompt version,
  base URL, model, temperature, max_tokens, messages, schema); a rerun, an ablation sweep or a resumed run
  asks the server only for what is not cached. Failures are not cached;
- HTTP requests (retries included), cache hits, tokens and cost are counted in :class:`Usage`; tokens of a
  reply that fails validation are billed too.

Messages are passed through unchanged, so a vision message (``image_part``) works like a text one.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import openai
from pydantic import BaseModel, ValidationError
from tqdm import tqdm

from grading.cache import SqliteCache
from grading.llm.settings import LLMSettings
from inkbase.errors import ConfigError

log = logging.getLogger(__name__)

Messages = list[dict[str, Any]]
# (messages, reply model[, variant]): the variant (e.g. "run=2") keeps repeated askings apart in the cache.
Request = tuple[Messages, type[BaseModel]] | tuple[Messages, type[BaseModel], str]

# The SDK insists on a key; keyless local servers (vLLM, Ollama, llama.cpp) ignore whatever is sent.
NO_KEY = "no-key"

# HTTP requests sent on behalf of the current chat call (retries included), counted by an httpx hook.
_requests_in_call: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("requests_in_call",
                                                                                      default=None)


async def _count_request(_request: Any) -> None:
    counter = _requests_in_call.get()
    if counter is not None:
        counter[0] += 1


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
    """A validated JSON reply (``data``), or why there is none (``error``; ``kind`` = unavailable | invalid |
    rejected). ``text`` is the last content the model sent (also when it did not validate); ``requests`` counts
    HTTP requests made for this reply, ``usage`` its tokens and ``cost_usd`` their price (all 0 when cached)."""

    data: dict[str, Any] | None
    text: str | None = None
    cached: bool = False
    error: str | None = None
    kind: str | None = None
    attempts: int = 0
    requests: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    key: str = ""

    @property
    def ok(self) -> bool:
        return self.data is not None

    @property
    def retried(self) -> bool:
        return self.requests > 1


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


def reply_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of a reply model in the form strict structured output accepts: every object closed
    (``additionalProperties: false``) and every property required. The model itself may be lenient."""
    schema = model.model_json_schema()

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["additionalProperties"] = False
                node["required"] = list(node["properties"])
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


class LLMClient:
    """Chat completions with validated JSON replies, retries, a concurrency limit, a reply cache and usage
    accounting. The settings' key is looked up at construction, so a missing one fails before any work."""

    def __init__(self, settings: LLMSettings, cache_dir: str | Path | None, prompt_version: str):
        self.settings = settings
        self.prompt_version = prompt_version
        self._api_key = settings.api_key()
        if settings.auth == "api-key" and not settings.query.get("api-version"):
            raise ConfigError("llm.query.api-version", "an Azure endpoint (auth: api-key) needs an api-version")
        self.cache = ReplyCache(Path(cache_dir) / "llm_replies.sqlite") if settings.cache and cache_dir else None
        self.usage = Usage()
        self._format = settings.response_format
        self._schemas: dict[type[BaseModel], dict[str, Any]] = {}

    def schema(self, reply: type[BaseModel]) -> dict[str, Any]:
        if reply not in self._schemas:
            self._schemas[reply] = reply_schema(reply)
        return self._schemas[reply]

    def cache_key(self, messages: Messages, reply: type[BaseModel], variant: str = "") -> str:
        s = self.settings
        fields = {"prompt_version": self.prompt_version, "base_url": s.base_url.rstrip("/"), "model": s.model,
                  "temperature": s.temperature, "max_tokens": s.max_tokens, "messages": messages,
                  "schema": self.schema(reply)}
        if variant:
            fields["variant"] = variant
        blob = json.dumps(fields, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _sdk(self) -> openai.AsyncOpenAI:
        s = self.settings
        common: dict[str, Any] = {
            "api_key": self._api_key or NO_KEY, "max_retries": s.max_retries, "timeout": s.timeout_s,
            "default_headers": s.headers or None,
            "http_client": openai.DefaultAsyncHttpxClient(event_hooks={"request": [_count_request]})}
        if s.auth == "api-key":
            query = {k: v for k, v in s.query.items() if k != "api-version"}
            return openai.AsyncAzureOpenAI(base_url=s.base_url, api_version=s.query["api-version"],
                                           default_query=query or None, **common)
        return openai.AsyncOpenAI(base_url=s.base_url, default_query=s.query or None, **common)

    def _response_format(self, reply: type[BaseModel]) -> dict[str, Any] | openai.Omit:
        if self._format == "json_schema":
            return {"type": "json_schema",
                    "json_schema": {"name": reply.__name__, "strict": True, "schema": self.schema(reply)}}
        if self._format == "json_object":
            return {"type": "json_object"}
        return openai.omit

    def _bill(self, completion: Any) -> tuple[dict[str, int], float]:
        usage = getattr(completion, "usage", None)
        tokens = {"prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
                  "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0)}
        s = self.settings
        cost = (tokens["prompt_tokens"] / 1000 * s.price_in_per_1k
                + tokens["completion_tokens"] / 1000 * s.price_out_per_1k)
        self.usage.prompt_tokens += tokens["prompt_tokens"]
        self.usage.completion_tokens += tokens["completion_tokens"]
        self.usage.cost_usd += cost
        return tokens, cost

    async def achat(self, sdk: openai.AsyncOpenAI, messages: Messages, reply: type[BaseModel],
                    variant: str = "") -> ChatReply:
        """One validated reply for ``messages`` (from the cache when there); ``sdk`` comes from ``_sdk``."""
        self.usage.calls += 1
        key = self.cache_key(messages, reply, variant)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.usage.cache_hits += 1
                return ChatReply(data=hit["data"], text=hit["text"], cached=True, usage=hit.get("usage", {}),
                                 key=key)
        counter = [0]
        _requests_in_call.set(counter)
        s = self.settings
        tokens = {"prompt_tokens": 0, "completion_tokens": 0}
        cost, text = 0.0, None
        error, kind, attempts = "no attempt made", "unavailable", 0
        try:
            while attempts <= s.max_retries:
                attempts += 1
                try:
                    completion = await sdk.chat.completions.create(
                        model=s.model, messages=messages, temperature=s.temperature, max_tokens=s.max_tokens,
                        response_format=self._response_format(reply))
                except openai.BadRequestError as err:
                    if self._format == "json_schema" and "response_format" in str(err.body) + err.message:
                        log.warning("%s rejects json_schema replies; falling back to json_object", s.base_url)
                        self._format = "json_object"
                        attempts -= 1
                        continue
                    return self._failed(key, counter, f"HTTP 400: {err.message[:200]}", "rejected", attempts)
                except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
                    raise ConfigError("llm.api_key_env", f"{s.url} refused the key in {s.api_key_env} "
                                                         f"(HTTP {err.status_code})") from None
                except openai.NotFoundError:
                    raise ConfigError("llm.model", f"{s.url} answered 404 for model {s.model!r} "
                                                   f"(check llm.base_url and llm.model)") from None
                except openai.APITimeoutError:
                    return self._failed(key, counter, f"timed out after {s.timeout_s}s", "unavailable", attempts)
                except openai.APIConnectionError as err:
                    return self._failed(key, counter, f"connection failed ({err.__cause__ or err})", "unavailable",
                                        attempts)
                except (openai.RateLimitError, openai.InternalServerError) as err:
                    return self._failed(key, counter, f"HTTP {err.status_code}", "unavailable", attempts)
                except openai.APIStatusError as err:
                    return self._failed(key, counter, f"HTTP {err.status_code}: {err.message[:200]}", "rejected",
                                        attempts)
                except (openai.APIResponseValidationError, ValueError) as err:
                    self.usage.invalid_replies += 1
                    error, kind = f"invalid reply: response body is not a chat completion ({err})", "invalid"
                    continue
                got, bill = self._bill(completion)
                tokens = {k: tokens[k] + got[k] for k in tokens}
                cost += bill
                text, problem = _content(completion)
                data = None
                if problem is None:
                    try:
                        data = reply.model_validate_json(text).model_dump(mode="json")
                    except ValidationError as err:
                        first = err.errors()[0]
                        where = ".".join(str(p) for p in first["loc"]) or "reply"
                        problem = f"{where}: {first['msg']}"
                if problem is not None:
                    self.usage.invalid_replies += 1
                    error, kind = f"invalid reply: {problem}", "invalid"
                    continue
                if self.cache is not None:
                    self.cache.put(key, s.model, {"data": data, "text": text, "usage": tokens})
                self._tally(counter)
                return ChatReply(data=data, text=text, attempts=attempts, requests=counter[0], usage=tokens,
                                 cost_usd=cost, key=key)
            failed = self._failed(key, counter, error, kind, attempts)
            failed.text, failed.usage, failed.cost_usd = text, tokens, cost
            return failed
        finally:
            _requests_in_call.set(None)

    def _tally(self, counter: list[int]) -> None:
        self.usage.requests += counter[0]
        self.usage.retries += max(counter[0] - 1, 0)

    def _failed(self, key: str, counter: list[int], error: str, kind: str, attempts: int) -> ChatReply:
        self._tally(counter)
        self.usage.failures += 1
        return ChatReply(data=None, error=error, kind=kind, attempts=attempts, requests=counter[0], key=key)

    async def achat_many(self, requests: Sequence[Request], progress: bool = False,
                         on_reply: Callable[[int, ChatReply], None] | None = None) -> list[ChatReply]:
        """``achat`` for each (messages, reply model[, variant]), at most ``concurrency`` in flight; results in
        input order. ``on_reply(index, reply)`` runs as each reply arrives (in the event loop's thread)."""
        limit = asyncio.Semaphore(self.settings.concurrency)
        bar = tqdm(total=len(requests), desc="llm", unit="req", disable=not progress)
        async with self._sdk() as sdk:
            async def one(i: int, request: Request) -> ChatReply:
                async with limit:
                    result = await self.achat(sdk, *request)
                if on_reply is not None:
                    on_reply(i, result)
                bar.update(1)
                return result

            tasks = [asyncio.ensure_future(one(i, r)) for i, r in enumerate(requests)]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            finally:
                bar.close()

    def chat_many(self, requests: Sequence[Request], progress: bool = False,
                  on_reply: Callable[[int, ChatReply], None] | None = None) -> list[ChatReply]:
        """Blocking ``achat_many`` (not from inside a running event loop: await ``achat_many`` there)."""
        if not requests:
            return []
        return asyncio.run(self.achat_many(requests, progress=progress, on_reply=on_reply))

    def chat(self, messages: Messages, reply: type[BaseModel]) -> ChatReply:
        """One validated reply for ``messages`` (blocking)."""
        return self.chat_many([(messages, reply)])[0]


def _content(completion: Any) -> tuple[str | None, str | None]:
    """(JSON text, problem) from a completion's first choice."""
    choices = getattr(completion, "choices", None)
    if not choices:
        return None, "no choices[0].message.content"
    content = getattr(getattr(choices[0], "message", None), "content", None)
    if not isinstance(content, str):
        return None, "message content is not text"
    text = _strip_fence(content)
    try:
        json.loads(text)
    except ValueError as err:
        return text, f"content is not JSON ({err})"
    return text, None


def _strip_fence(content: str) -> str:
    # json_object/none modes sometimes wrap JSON in a Markdown code fence.
    text = content.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()
