"""``scripts/review.py``: open an exam's store and serve the review app with uvicorn.

The run folder records the configuration (the token redacted) and, when the server stops, what was
reviewed while it ran; the reviews themselves live in ``<exam_dir>/exam.sqlite``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from typing import Any

from omegaconf import DictConfig, OmegaConf

from inkbase.errors import ConfigError, check_range
from inkbase.runs import hydra_output_dir, start_run
from inkgrade.review.app import LOOPBACK_NAMES, TOKEN_ENV, ReviewSettings, create_app
from inkgrade.review.single import SingleAnswerEngine
from inkgrade.store import ExamStore

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(cfg: DictConfig) -> str | None:
    """The configured token (``token=`` or ``$INKGRADE_REVIEW_TOKEN``); refuse a non-loopback host without one."""
    token = cfg.token or os.environ.get(TOKEN_ENV) or None
    if token is not None and len(str(token)) < 8:
        raise ConfigError("token", "shorter than 8 characters")
    if not is_loopback(str(cfg.host)) and token is None:
        raise ConfigError("token", f"host {cfg.host} is reachable from other machines: set token=... or "
                                   f"${TOKEN_ENV} (or bind host=127.0.0.1)")
    return None if token is None else str(token)


def run(cfg: DictConfig) -> dict[str, Any]:
    import uvicorn

    token = resolve_token(cfg)
    check_range("port", cfg.port, 0, 65535)
    check_range("max_upload_mb", cfg.max_upload_mb, 0.01, 1024)
    store = ExamStore.open(cfg.exam_dir)
    recorded = OmegaConf.to_container(cfg, resolve=True)
    if recorded.get("token"):
        recorded["token"] = "(set)"
    folder = start_run(hydra_output_dir(cfg.out_dir), recorded)
    engine = SingleAnswerEngine(cfg)
    if cfg.warm_up:
        threading.Thread(target=engine.load, name="load-models", daemon=True).start()
    settings = ReviewSettings(token=token, reviewer=cfg.reviewer, max_upload_bytes=int(cfg.max_upload_mb * 2**20),
                              allowed_hosts=(*LOOPBACK_NAMES, str(cfg.host)))
    metrics: dict[str, Any] = {}

    def finish() -> None:
        # Runs inside the server's shutdown: uvicorn re-raises SIGTERM/SIGINT once it has stopped.
        metrics["changes"] = len(store.audit()) - n_audit
        metrics["questions"] = [{k: q[k] for k in ("question_id", "n_items", "n_done", "n_skipped", "n_unreviewed")}
                                for q in app.state.service.questions()]
        folder.finish(metrics)

    app = create_app(store, settings, engine, on_stop=finish)
    n_audit = len(store.audit())  # after the app scored empty answers: "changes" counts the reviewers' own
    log.info("review app for %s on http://%s:%d/%s", cfg.exam_dir, cfg.host, cfg.port,
             "?token=..." if token else "")
    uvicorn.run(app, host=str(cfg.host), port=int(cfg.port), log_level="info")
    store.close()
    return metrics
