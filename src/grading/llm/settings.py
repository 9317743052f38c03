"""Endpoint settings for an OpenAI-compatible chat-completions server (``configs/llm/<name>.yaml``)."""

from __future__ import annotations

import os
from typing import Literal

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inkbase.errors import ConfigError


class LLMSettings(BaseModel):
    """One endpoint: where it is, which model, how to authenticate, how hard to try, what it costs."""

    model_config = ConfigDict(extra="forbid")

    provider: str
    base_url: str = Field(min_length=1)
    model: str = Field(min_length=1)
    # Name of the environment variable holding the key (never the key itself, so configs can be committed).
    api_key_env: str | None
    api_key_required: bool
    # bearer: "Authorization: Bearer <key>" (OpenAI, Gemini, vLLM, ...); api-key: Azure's "api-key: <key>"
    # (the SDK's Azure client, which takes the API version from query["api-version"]).
    auth: Literal["bearer", "api-key"]
    headers: dict[str, str]
    query: dict[str, str]
    # json_schema: strict structured output; json_object: "some JSON" mode for servers without schemas;
    # none: plain text that must still parse as JSON.
    response_format: Literal["json_schema", "json_object", "none"]
    temperature: float = Field(ge=0, le=2)
    max_tokens: int = Field(gt=0)
    timeout_s: float = Field(gt=0)
    # The SDK's retries (429, 5xx, timeouts, dropped connections; exponential backoff, Retry-After honoured),
    # and as many new tries for a reply that does not validate.
    max_retries: int = Field(ge=0, le=20)
    concurrency: int = Field(ge=1, le=256)
    price_in_per_1k: float = Field(ge=0)
    price_out_per_1k: float = Field(ge=0)
    cache: bool

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def api_key(self) -> str | None:
        """The key from the environment; a clear error naming the variable when a required one is unset."""
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if not key and self.api_key_required:
            raise ConfigError("llm.api_key_env", f"environment variable {self.api_key_env} is not set "
                                                 f"(the {self.provider} endpoint needs an API key)")
        return key or None


def load_settings(cfg: DictConfig | dict | LLMSettings) -> LLMSettings:
    """Validate an ``llm`` config node; out-of-range or unknown keys become a :class:`ConfigError`."""
    if isinstance(cfg, LLMSettings):
        return cfg
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    try:
        return LLMSettings.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"llm.{key}", first["msg"]) from None
