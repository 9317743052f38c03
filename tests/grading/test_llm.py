"""The LLM client and grader against a real HTTP server on 127.0.0.1 that plays scripted behaviours.

The student answer text names the behaviour ("rate-limited", "slow", ...); the server counts attempts
per answer, so retries see the behaviour change (e.g. 429 first, then a good reply).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from grading.graders.llm import LLMGrader
from grading.llm import (
    GRADE_SCHEMA,
    PROMPT_VERSION,
    GradeReply,
    LLMClient,
    grade_messages,
    image_part,
    load_settings,
)
from grading.rubric import Answer, Question
from inkbase.errors import ConfigError

GOOD = {"coherence": 0.8, "correctness": 0.6, "justification": "Names the main idea; misses the cause."}


class FakeServer:
    def __init__(self, reject_json_schema: bool = False, status: int | None = None):
        self.attempts: Counter[str] = Counter()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.paths: list[str] = []
        self.times: dict[str, list[float]] = {}
        self.reject_json_schema = reject_json_schema
        self.status = status
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.bodies.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})  # names are case-insensitive
                    server.paths.append(self.path)
                try:
                    server.respond(self, body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def respond(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        if self.status is not None:
            return self.send(handler, self.status, {"error": {"message": "scripted"}})
        if self.reject_json_schema and body.get("response_format", {}).get("type") == "json_schema":
            return self.send(handler, 400, {"error": {"message": "response_format json_schema not supported"}})
        content = body["messages"][-1]["content"]
        if isinstance(content, list):  # a vision message: its text part names the case
            content = next(p["text"] for p in content if p["type"] == "text")
        case = content.rsplit("Student answer: ", 1)[-1]
        with self.lock:
            self.attempts[case] += 1
            attempt = self.attempts[case]
            self.times.setdefault(case, []).append(time.monotonic())
        if case == "rate-limited" and attempt == 1:
            return self.send(handler, 429, {"error": "slow down"}, {"Retry-After": "0.05"})
        if case == "server-error" and attempt == 1:
            return self.send(handler, 500, {"error": "oops"})
        if case == "slow" and attempt == 1:
            time.sleep(1.0)
        if case.startswith("busy"):
            time.sleep(0.15)
        if (case == "malformed" and attempt == 1) or case == "always-malformed":
            return self.send(handler, 200, self.completion("Sure! coherence is high {"))
        if case == "out-of-range":
            return self.send(handler, 200, self.completion(json.dumps(
                {"coherence": 1.7, "correctness": -0.2, "justification": "x"})))
        if case == "missing-key":
            return self.send(handler, 200, self.completion(json.dumps({"coherence": 0.5})))
        return self.send(handler, 200, self.completion(json.dumps(GOOD)))

    @staticmethod
    def completion(content: str) -> dict:
        return {"choices": [{"message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20}}

    @staticmethod
    def send(handler, code: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            handler.send_response(code)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                handler.send_header(k, v)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def settings(base_url: str, **over) -> dict:
    cfg = {"provider": "test", "base_url": base_url, "model": "test-model", "api_key_env": "INKGRADE_TEST_KEY",
           "api_key_required": False, "auth": "bearer", "headers": {"X-Extra": "1"}, "query": {},
           "response_format": "json_schema", "temperature": 0.0, "max_tokens": 200, "timeout_s": 0.4,
           "max_retries": 3, "concurrency": 4,
           "price_in_per_1k": 0.5, "price_out_per_1k": 2.0, "cache": True}
    cfg.update(over)
    return cfg


QUESTION = Question(id="q1", text="Why does ice float?", max_points=2, granularity=0.5,
                    reference_answer="Ice is less dense than liquid water.",
                    concepts=[{"id": "c1", "label": "less dense", "weight": 1.0}])


def answers(*texts: str) -> list[Answer]:
    return [Answer(answer_id=f"a{i}", question_id="q1", text=t) for i, t in enumerate(texts)]


def grader(base_url: str, cache_dir, **over) -> LLMGrader:
    return LLMGrader(llm=settings(base_url, **over), cache_dir=cache_dir, max_consecutive_failures=3,
                     progress=False)


def test_good_reply_scores_mean_of_coherence_and_correctness(tmp_path):
    with FakeServer() as srv:
        g = grader(srv.base_url, tmp_path)
        [res] = g.grade(QUESTION, answers("good"))
    assert res.details["s_llm"] == pytest.approx(0.7)
    assert res.details["fraction"] == pytest.approx(0.7)
    assert res.points == 1.5  # 0.7 * 2 = 1.4 -> nearest 0.5
    assert res.details["flags"] == []
    body = srv.bodies[0]
    assert body["model"] == "test-model"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == GRADE_SCHEMA
    assert srv.headers[0]["x-extra"] == "1"


@pytest.mark.parametrize("case", ["rate-limited", "server-error", "slow", "malformed"])
def test_transient_failures_are_retried_then_succeed(tmp_path, case):
    with FakeServer() as srv:
        g = grader(srv.base_url, tmp_path)
        [res] = g.grade(QUESTION, answers(case))
    assert res.details["s_llm"] == pytest.approx(0.7)
    assert srv.attempts[case] == 2
    usage = g.usage_summary()
    assert usage["retries"] == 1 and usage["failures"] == 0
    if case == "malformed":
        assert usage["invalid_replies"] == 1


def test_retry_after_is_honoured(tmp_path):
    # The SDK's own backoff before a first retry is 0.375-0.5 s; Retry-After asks for 0.05 s.
    with FakeServer() as srv:
        client = LLMClient(load_settings(settings(srv.base_url)), tmp_path, PROMPT_VERSION)
        reply = client.chat(grade_messages(QUESTION, "rate-limited"), GradeReply)
    assert reply.ok and reply.retried and reply.requests == 2
    first, second = srv.times["rate-limited"]
    assert 0.05 <= second - first < 0.3


def test_out_of_range_scores_are_clamped_and_flagged(tmp_path):
    with FakeServer() as srv:
        [res] = grader(srv.base_url, tmp_path).grade(QUESTION, answers("out-of-range"))
    d = res.details
    assert (d["coherence"], d["correctness"]) == (1.0, 0.0)
    assert d["flags"] == ["coherence_out_of_range:1.7", "correctness_out_of_range:-0.2"]
    assert d["needs_review"] is True
    assert 0 <= res.points <= res.max_points


@pytest.mark.parametrize("case", ["always-malformed", "missing-key"])
def test_persistently_invalid_reply_is_flagged_not_fatal(tmp_path, case):
    with FakeServer() as srv:
        g = grader(srv.base_url, tmp_path)
        res = g.grade(QUESTION, answers(case, "good"))
    bad, good = res
    assert bad.points == 0.0 and bad.details["fraction"] == 0.0 and bad.details["s_llm"] is None
    assert bad.details["needs_review"] is True
    assert bad.details["flags"][0].startswith("llm_failed:invalid")
    assert srv.attempts[case] == 4  # first try + max_retries
    assert good.details["s_llm"] == pytest.approx(0.7)
    # A failed reply is not cached: a rerun asks again.
    before = srv.requests
    with FakeServer() as srv2:
        g2 = grader(srv2.base_url, tmp_path)
        g2.grade(QUESTION, answers(case))
    assert srv2.requests == 4 and before > 0


def test_concurrency_limit_is_respected(tmp_path):
    with FakeServer() as srv:
        g = grader(srv.base_url, tmp_path, concurrency=2)
        res = g.grade(QUESTION, answers(*[f"busy {i}" for i in range(8)]))
    assert len(res) == 8 and all(r.details["s_llm"] == pytest.approx(0.7) for r in res)
    assert srv.max_in_flight == 2


def test_cache_makes_rerun_free_and_usage_is_counted(tmp_path):
    texts = ["busy a", "busy b", "good"]
    with FakeServer() as srv:
        g = grader(srv.base_url, tmp_path)
        first = g.grade(QUESTION, answers(*texts))
        usage = g.usage_summary()
        assert srv.requests == 3
        assert usage["prompt_tokens"] == 300 and usage["completion_tokens"] == 60
        assert usage["cost_usd"] == pytest.approx(3 * (100 / 1000 * 0.5 + 20 / 1000 * 2.0))
        assert usage["cache_hits"] == 0 and usage["model"] == "test-model"
        g2 = grader(srv.base_url, tmp_path)
        second = g2.grade(QUESTION, answers(*texts))
        assert srv.requests == 3  # nothing new was sent
    assert g2.usage_summary()["cache_hits"] == 3 and g2.usage_summary()["cost_usd"] == 0
    assert [r.details["fraction"] for r in first] == [r.details["fraction"] for r in second]
    assert all(r.details["cached"] for r in second)


def test_cache_key_depends_on_model_and_prompt_version(tmp_path):
    s = load_settings(settings("http://127.0.0.1:9/v1"))
    msgs = grade_messages(QUESTION, "x")
    a = LLMClient(s, tmp_path, "v1").cache_key(msgs, GradeReply)
    assert a == LLMClient(s, tmp_path, "v1").cache_key(msgs, GradeReply)
    assert a != LLMClient(s, tmp_path, "v2").cache_key(msgs, GradeReply)
    other = load_settings(settings("http://127.0.0.1:9/v1", model="other"))
    assert a != LLMClient(other, tmp_path, "v1").cache_key(msgs, GradeReply)


def test_server_without_json_schema_falls_back_to_json_object(tmp_path):
    with FakeServer(reject_json_schema=True) as srv:
        [res] = grader(srv.base_url, tmp_path).grade(QUESTION, answers("good"))
    assert res.details["s_llm"] == pytest.approx(0.7)
    assert [b["response_format"]["type"] for b in srv.bodies] == ["json_schema", "json_object"]


def test_empty_answer_scores_zero_without_a_request(tmp_path):
    with FakeServer() as srv:
        [res] = grader(srv.base_url, tmp_path).grade(QUESTION, answers("   "))
    assert srv.requests == 0 and res.points == 0 and res.details["flags"] == ["empty_answer"]


def test_missing_api_key_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("INKGRADE_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="INKGRADE_TEST_KEY"):
        grader("http://127.0.0.1:9/v1", tmp_path, api_key_required=True)


def test_key_is_sent_and_rejected_key_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.setenv("INKGRADE_TEST_KEY", "sk-test")
    with FakeServer(status=401) as srv:
        g = grader(srv.base_url, tmp_path, api_key_required=True)
        with pytest.raises(ConfigError, match="INKGRADE_TEST_KEY"):
            g.grade(QUESTION, answers("good"))
    assert srv.headers[0]["authorization"] == "Bearer sk-test"


def test_unreachable_server_stops_the_run_after_a_streak(tmp_path):
    with FakeServer() as srv:
        url = srv.base_url
    # The server is shut down: every request fails to connect.
    g = grader(url, tmp_path, max_retries=0)
    with pytest.raises(ConfigError, match="in a row"):
        g.grade(QUESTION, answers("a", "b", "c", "d"))


def test_out_of_range_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="llm.concurrency"):
        load_settings(settings("http://x/v1", concurrency=0))


def test_vision_message_is_sent_as_a_data_uri(tmp_path):
    part = image_part(b"\x89PNG fake", mime="image/png")
    assert part["image_url"]["url"].startswith("data:image/png;base64,")
    with FakeServer() as srv:
        client = LLMClient(load_settings(settings(srv.base_url)), tmp_path, PROMPT_VERSION)
        msgs = [{"role": "user", "content": [{"type": "text", "text": "Student answer: good"}, part]}]
        reply = client.chat(msgs, GradeReply)
    assert reply.ok and srv.bodies[0]["messages"][0]["content"][1] == part


def test_grade_entry_point_records_usage_and_resumes_from_cache(tmp_path):
    from grading import grade
    from inkbase.cli import compose

    rubric = {"exam_id": "t", "questions": [QUESTION.model_dump()]}
    (tmp_path / "rubric.json").write_text(json.dumps(rubric))
    (tmp_path / "answers.jsonl").write_text("".join(
        json.dumps({"answer_id": f"a{i}", "question_id": "q1", "text": t}) + "\n"
        for i, t in enumerate(["good", "busy 1", "out-of-range"])))
    with FakeServer() as srv:
        def run(out):
            cfg = compose("grade", [f"rubric={tmp_path / 'rubric.json'}", f"answers={tmp_path / 'answers.jsonl'}",
                                    "grader=llm", "llm=vllm", f"llm.base_url={srv.base_url}", "llm.model=m",
                                    "llm.timeout_s=2", f"paths.cache_dir={tmp_path / 'cache'}", f"out_dir={out}"])
            return grade.run(cfg)

        first = run(tmp_path / "run1")
        assert first["llm_usage"]["requests"] == 3 and first["llm_usage"]["cache_hits"] == 0
        second = run(tmp_path / "run2")
    assert second["llm_usage"]["requests"] == 0 and second["llm_usage"]["cache_hits"] == 3
    rows = [json.loads(x) for x in (tmp_path / "run1" / "scores.jsonl").read_text().splitlines()]
    assert [r["points"] for r in rows] == [1.5, 1.5, 1.0]
    assert rows[2]["flags"] and rows[2]["needs_review"]


@pytest.mark.parametrize("name", ["openai", "azure", "gemini", "vllm", "ollama", "llamacpp"])
def test_every_provider_config_reaches_an_openai_compatible_server(monkeypatch, tmp_path, name):
    from inkbase.cli import compose

    for var in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.setenv(var, f"key-{var}")
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    with FakeServer() as srv:
        base = srv.base_url + ("/openai/deployments/dep" if name == "azure" else "")
        cfg = compose("grade", ["grader=llm", f"llm={name}", f"llm.base_url={base}", "llm.model=m"])
        client = LLMClient(load_settings(cfg.llm), tmp_path, PROMPT_VERSION)
        reply = client.chat(grade_messages(QUESTION, "good"), GradeReply)
    assert reply.ok and reply.data == GOOD
    path, headers = srv.paths[0], srv.headers[0]
    if name == "azure":
        assert path == "/v1/openai/deployments/dep/chat/completions?api-version=2024-10-21"
        assert headers["api-key"] == "key-AZURE_OPENAI_API_KEY" and "authorization" not in headers
    else:
        assert path == "/v1/chat/completions"
        expected = {"openai": "key-OPENAI_API_KEY", "gemini": "key-GEMINI_API_KEY"}.get(name, "no-key")
        assert headers["authorization"] == f"Bearer {expected}"
