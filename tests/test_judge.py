"""The chat judge against a real HTTP server on 127.0.0.1 that speaks the chat-completions
protocol and answers with canned judgments, 429s, 500s, slow replies and garbage."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlb_core.errors import MLBError
from mlb_core.evaluation.benchmarks import load_benchmark
from mlb_core.evaluation.chat import ChatJudge
from mlb_core.evaluation.judge import JudgeCache, KeywordJudge, judge_messages, parse_judgment, read_jsonl
from mlb_core.evaluation.scoring import metrics, score_records

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = "sk-test-DO-NOT-LEAK-5f2c"
TIMEOUT = 0.5
# VCGBench criterion -> the score the server gives (4.8 checks the protocol's int() truncation)
CRITERION_SCORES = {"factual accuracy": 3, "detail orientation": 2, "contextual understanding": 4.8,
                    "temporal understanding": 1, "consistency of generative outputs": 5}


class FakeJudgeServer:
    """Chat-completions server. The prediction text steers it:
    ``[429x2]`` two 429s first, ``[500]`` one 500 first, ``[always500]``, ``[400]``,
    ``[slow]`` one reply slower than the client's timeout first, ``[badbody]`` one non-JSON
    HTTP body first, ``[garbage]`` an unparsable verdict every time. Otherwise: ``yes``/4 if
    the prediction contains "correct", else ``no``/1."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.auth: list[str | None] = []
        self.models: list[str] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, code, body, headers=()):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                system, user = req["messages"][0]["content"], req["messages"][1]["content"]
                pred = re.search(r"Predicted Answer(?: to Question 1)?: (.*)", user).group(1)
                with server.lock:
                    server.calls[pred] += 1
                    n = server.calls[pred]
                    server.auth.append(self.headers.get("Authorization"))
                    server.models.append(req["model"])
                if "[429x2]" in pred and n <= 2:
                    return self._send(429, {"error": "rate limited"}, [("Retry-After", "0")])
                if ("[500]" in pred and n <= 1) or "[always500]" in pred:
                    return self._send(500, {"error": "boom"})
                if "[400]" in pred:
                    return self._send(400, {"error": "bad request"})
                if "[slow]" in pred and n <= 1:
                    time.sleep(TIMEOUT * 2.5)
                if "[badbody]" in pred and n <= 1:
                    return self._send(200, b"<html>upstream hiccup</html>")
                if "[garbage]" in pred:
                    content = "I would say the prediction is sort of fine."
                elif "yes/no" in user:
                    ok = "correct" in pred
                    content = f"{{'pred': '{'yes' if ok else 'no'}', 'score': {4 if ok else 1}}}"
                else:
                    score = next(v for k, v in CRITERION_SCORES.items() if k in system)
                    content = f"{{'score': {score}}}"
                return self._send(200, {"id": "x", "object": "chat.completion", "model": req["model"],
                                        "system_fingerprint": "fp_test",
                                        "choices": [{"index": 0, "finish_reason": "stop",
                                                     "message": {"role": "assistant", "content": content}}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("MLB_TEST_JUDGE_KEY", SECRET)
    with FakeJudgeServer() as s:
        yield s


def _judge(server, cache, **kw):
    return ChatJudge("judge-model-0125", server.url, "MLB_TEST_JUDGE_KEY", cache, timeout=TIMEOUT,
                     max_retries=3, workers=4, **kw)


def _open_record(qid, prediction, status="answered"):
    return {"qid": qid, "task": "open", "question": f"what is in clip {qid}?", "answer": "a dog",
            "prediction": prediction, "status": status, "question_type": "what"}


RECORDS = [
    _open_record("1", "correct: a dog"),
    _open_record("2", "wrong: a cat"),
    _open_record("3", "correct [429x2]"),
    _open_record("4", "wrong [500]"),
    _open_record("5", "correct [slow]"),
    _open_record("6", "correct [garbage]"),
    _open_record("7", "wrong [badbody]"),
    _open_record("8", "correct [400]"),
    _open_record("9", "", status="skipped"),
]


def test_open_ended_scores_survive_429_500_timeouts_and_garbage(server, tmp_path):
    cache = tmp_path / "judge-cache.jsonl"
    judge = _judge(server, cache)
    scored = score_records(RECORDS, judge)
    assert [r["qid"] for r in scored] == [r["qid"] for r in RECORDS]  # nothing lost, order kept
    by = {r["qid"]: r for r in scored}
    assert [by[q]["correct"] for q in "1234567"] == [True, False, True, False, True, None, False]
    assert by["6"]["judge"]["error"].startswith("unparsable") and "sort of fine" in by["6"]["judge"]["raw"]
    assert by["8"]["judge"]["error"] == "request failed: HTTP 400 from the judge server (not retried)"
    assert "judge" not in by["9"]
    m = metrics(scored, "open")
    assert m["accuracy"] == 3 / 6  # yes / (yes + no) over the judged
    assert m["score"] == (4 + 1 + 4 + 1 + 4 + 1) / 6
    assert m["counts"] == {"total": 9, "answered": 8, "skipped": 1, "failed": 0, "judged": 6,
                           "judge_failed": 2, "unparsed_options": 0}
    # retries really happened: 429 x2, 500 x1, one timeout, one bad body; 400 not retried
    assert server.calls["correct [429x2]"] == 3 and server.calls["wrong [500]"] == 2
    assert server.calls["correct [slow]"] == 2 and server.calls["wrong [badbody]"] == 2
    assert server.calls["correct [400]"] == 1
    # the pinned model id is what was asked for; the key went in the header only
    assert set(server.models) == {"judge-model-0125"} and set(server.auth) == {f"Bearer {SECRET}"}
    for path in tmp_path.iterdir():
        assert SECRET not in path.read_text()


def test_rescoring_is_free_and_stable(server, tmp_path):
    cache = tmp_path / "judge-cache.jsonl"
    first = score_records(RECORDS, _judge(server, cache))
    sent = sum(server.calls.values())
    again = _judge(server, cache)  # a fresh client reading the cache file
    second = score_records(RECORDS, again)
    assert second == first
    assert again.n_requests == 1  # only the 400 (a failure, never cached) is asked again
    assert sum(server.calls.values()) == sent + 1
    # an unparsable reply is cached as such; retry_unparsable asks again
    third = _judge(server, cache, retry_unparsable=True)
    score_records(RECORDS, third)
    assert third.n_requests == 2 and server.calls["correct [garbage]"] == 2


def test_persistent_5xx_is_recorded_after_the_retries(server, tmp_path):
    judge = _judge(server, tmp_path / "c.jsonl")
    scored = score_records([_open_record("1", "correct [always500]")], judge)
    assert scored[0]["correct"] is None
    assert scored[0]["judge"]["error"] == "request failed: HTTP 500 after 4 tries"
    assert server.calls["correct [always500]"] == 4
    assert read_jsonl(tmp_path / "c.jsonl") == []  # transient failures are not cached


def test_vcgbench_five_scores_as_the_protocol_defines(server, tmp_path):
    items = load_benchmark("vcgbench", FIXTURES)
    records = [{**it.to_dict(), **it.extra, "status": "answered", "prediction": f"an answer to {it.qid}"}
               for it in items]
    judge = _judge(server, tmp_path / "c.jsonl")
    scored = score_records(records, judge)
    m = metrics(scored, "vcgbench")
    v = m["vcgbench"]
    assert v["scores"] == {"correctness": 3, "detail": 2, "context": 4, "temporal": 1, "consistency": 5}
    assert v["judged"] == {"correctness": 2, "detail": 2, "context": 2, "temporal": 1, "consistency": 2}
    assert m["score"] == v["mean"] == (3 + 2 + 4 + 1 + 5) / 5
    # generic: 3 criteria each, temporal: 1, consistency: one call per pair with both answers
    assert sum(server.calls.values()) == 2 * 3 + 1 + 2
    c1 = next(r for r in scored if r["part"] == "consistency1")
    c2 = next(r for r in scored if r["part"] == "consistency2" and r["question_id"] == c1["question_id"])
    assert "judges" in c1 and "judges" not in c2
    msgs = judge_messages("consistency", c1["question"], c1["answer"], c1["prediction"], c2["question"],
                          c2["prediction"])
    assert c2["question"] in msgs[1]["content"] and c2["prediction"] in msgs[1]["content"]


def test_parse_judgment_variants():
    assert parse_judgment("{'pred': 'yes', 'score': 4}", True) == ("yes", 4.0)
    assert parse_judgment('```json\n{"pred": "no", "score": 2}\n```', True) == ("no", 2.0)
    assert parse_judgment("Sure! {'pred': 'Yes.', 'score': 4.8}.", True) == ("yes", 4.8)
    assert parse_judgment("{''score': 3}", False) == (None, 3.0)  # echoing the protocol prompt's own typo
    assert parse_judgment("{'score': 3}", False) == (None, 3.0)
    assert parse_judgment("pred: yes, score: 5", True) == ("yes", 5.0)
    for bad, need in [("no dict here", True), ("{'pred': 'yes'}", True), ("{'pred': 'yes', 'score': 9}", True),
                      ("{'pred': 'maybe', 'score': 3}", True), ("{'score': 'high'}", False)]:
        with pytest.raises(ValueError):
            parse_judgment(bad, need)


def test_messages_follow_the_protocol():
    qa = judge_messages("qa", "Q?", "A", "P")
    assert qa[0]["role"] == "system" and "yes/no" in qa[1]["content"]
    assert "Question: Q?\nCorrect Answer: A\nPredicted Answer: P" in qa[1]["content"]
    assert "temporal accuracy score" in judge_messages("temporal", "Q", "A", "P")[1]["content"]
    with pytest.raises(MLBError, match="criterion"):
        judge_messages("fluency", "Q", "A", "P")


def test_official_api_needs_a_key(monkeypatch):
    monkeypatch.delenv("MLB_NO_SUCH_KEY", raising=False)
    judge = ChatJudge(api_key_env="MLB_NO_SUCH_KEY")
    with pytest.raises(MLBError, match=r"\$MLB_NO_SUCH_KEY"):
        judge.check_ready()
    assert "api_key" not in json.dumps(judge.describe()).replace("api_key_env", "")


def test_cache_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "c.jsonl"
    cache = JudgeCache(path)
    cache.put("k1", {"pred": "yes", "score": 4.0, "raw": "", "error": None, "judge": "j"})
    with open(path, "a") as f:
        f.write('{"key": "k2", "judgment": {"pr')  # a writer killed mid-line
    again = JudgeCache(path)
    assert len(again) == 1 and again.get("k1")["score"] == 4.0
    again.put("k3", {"pred": "no", "score": 1.0, "raw": "", "error": None, "judge": "j"})
    assert [r["key"] for r in read_jsonl(path)] == ["k1", "k3"]


def test_keyword_judge():
    judge = KeywordJudge(["red", "green", "blue"])
    yes = judge.judge("qa", "What colour?", "red", "In the video, the circle is red.")
    assert (yes.pred, yes.score) == ("yes", 5.0)
    hedge = judge.judge("qa", "What colour?", "red", "green, red or blue")  # first mention counts
    assert (hedge.pred, hedge.score) == ("no", 0.0)
    assert judge.judge("qa", "What colour?", "red", "Reddish tones").pred == "no"  # whole words only
    loose = KeywordJudge()
    assert loose.judge("qa", "who?", "a man", "I think A man, clearly").pred == "yes"
    assert loose.judge("qa", "who?", "man", "a woman").pred == "no"
    with pytest.raises(MLBError):
        judge.judge("temporal", "Q", "A", "P")


def test_eval_open_ended_benchmark_with_the_chat_judge(server, tmp_path, tiny):
    import torch

    from mlb_core.evaluation.runner import evaluate
    from mlb_core.evaluation.synthetic import SynthConfig, generate

    generate(tmp_path / "clip", SynthConfig(n_videos=1, n_frames=12, size=(64, 48), forms=("mc",)))
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("bQJQGoJF7_k_162_169", "ZbtpcGi2DWY_161_170"):
        (videos / f"{name}.mp4").write_bytes((tmp_path / "clip" / "videos" / "synth00.mp4").read_bytes())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (res,) = evaluate("msvd-qa", FIXTURES, ["mlb"], ["tiny"], "tiny:llava_next", tmp_path / "out", videos=videos,
                          judge="chat", judge_model="judge-model-0125", judge_base_url=server.url,
                          judge_key_env="MLB_TEST_JUDGE_KEY", judge_workers=2, vlm=tiny, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert res["judge"] == {"name": "judge-model-0125", "kind": "openai-chat", "base_url": server.url,
                            "api_key_env": "MLB_TEST_JUDGE_KEY", "temperature": None,
                            "served_models": ["judge-model-0125"], "system_fingerprints": ["fp_test"]}
    assert res["counts"]["answered"] == 3 and res["counts"]["judged"] == 3
    assert res["accuracy"] == 0.0 and res["score"] == 1.0  # the server's canned "no", 1
    assert sum(server.calls.values()) == 3
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text()
    cached = read_jsonl(tmp_path / "out" / "judge-cache.jsonl")
    assert len(cached) == 3 and {c["judge"] for c in cached} == {"judge-model-0125"}


# ---- a dead judge stops at once ---------------------------------------------------------------------
class _ScriptedServer:
    """Answers the n-th POST with ``replies[n]`` (the last one from then on): ``(status, headers,
    JSON body)``; records when each request came and its Authorization header."""

    def __init__(self, replies):
        self.hits = 0
        self.times: list[float] = []
        self.auth: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.times.append(time.perf_counter())
                outer.auth.append(self.headers.get("Authorization"))
                code, headers, body = replies[min(outer.hits, len(replies) - 1)]
                outer.hits += 1
                data = json.dumps(body).encode()
                self.send_response(code)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @classmethod
    def refusing(cls, code=401):
        return cls([(code, (), {"error": "invalid api key"})])

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _completion(content="{'pred': 'yes', 'score': 4}", model="judge-model-0125-2024-01-25", fingerprint="fp_42"):
    return (200, [("Content-Type", "application/json")],
            {"id": "x", "object": "chat.completion", "created": 0, "model": model, "system_fingerprint": fingerprint,
             "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]})


def _unused_url():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize("code", [401, 403, 404])
def test_refusing_judge_stops_at_the_first_reply(tmp_path, code):
    from mlb_core.evaluation.chat import JudgeUnavailable

    srv = _ScriptedServer.refusing(code)
    try:
        judge = ChatJudge("m", srv.url, "NO_SUCH_KEY_ENV", tmp_path / "c.jsonl", timeout=2, max_retries=6,
                          workers=2)
        t0 = time.perf_counter()
        with pytest.raises(JudgeUnavailable) as err:
            score_records([_open_record(str(i), f"p{i}") for i in range(9)], judge)
        assert time.perf_counter() - t0 < 3
        assert judge.n_requests <= 2 and srv.hits <= 2  # one per worker at most, never retried
        msg = str(err.value)
        assert f"{srv.url}/chat/completions" in msg and f"HTTP {code}" in msg and "\n" not in msg
    finally:
        srv.close()


def test_unreachable_judge_fails_fast(tmp_path):
    from mlb_core.evaluation.chat import JudgeUnavailable

    url = _unused_url()
    judge = ChatJudge("m", url, "NO_SUCH_KEY_ENV", None, timeout=5, max_retries=6, workers=1)
    t0 = time.perf_counter()
    with pytest.raises(JudgeUnavailable, match="cannot be reached"):
        judge.judge("qa", "q", "a", "p")
    assert time.perf_counter() - t0 < 2 and judge.n_requests == 1


def test_retries_are_bounded_in_time(server, tmp_path):
    judge = ChatJudge("m", server.url, "MLB_TEST_JUDGE_KEY", None, timeout=TIMEOUT, max_retries=50,
                      max_retry_s=1.0, workers=1)
    t0 = time.perf_counter()
    out = judge.judge("qa", "q", "a", "correct [always500]")
    assert time.perf_counter() - t0 < 2.5
    assert out.error.startswith("request failed: HTTP 500 (retry time of 1 s used up)")


def test_served_model_and_fingerprint_are_recorded(server, tmp_path):
    judge = _judge(server, tmp_path / "c.jsonl")
    out = judge.judge("qa", "q", "a", "correct")
    assert (out.served_model, out.system_fingerprint) == ("judge-model-0125", "fp_test")
    again = _judge(server, tmp_path / "c.jsonl")  # from the cache
    assert again.judge("qa", "q", "a", "correct") == out and again.n_requests == 0
    assert again.describe()["system_fingerprints"] == ["fp_test"]


def test_served_model_and_fingerprint_come_from_the_reply(tmp_path, monkeypatch):
    """The model the server says it served is recorded (not the one asked for); without a key no
    Authorization header is sent; a loopback server is reached directly despite a (dead) proxy."""
    monkeypatch.delenv("NO_SUCH_KEY_ENV", raising=False)
    dead_proxy = _unused_url().removesuffix("/v1")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(var, dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    srv = _ScriptedServer([_completion()])
    try:
        judge = ChatJudge("judge-model-0125", srv.url, "NO_SUCH_KEY_ENV", tmp_path / "c.jsonl", timeout=2,
                          max_retries=0, workers=1)
        out = judge.judge("qa", "q", "a", "p")
    finally:
        srv.close()
    assert (out.pred, out.score, out.error, out.judge) == ("yes", 4.0, None, "judge-model-0125")
    assert (out.served_model, out.system_fingerprint) == ("judge-model-0125-2024-01-25", "fp_42")
    info = judge.describe()
    assert info["served_models"] == ["judge-model-0125-2024-01-25"] and info["system_fingerprints"] == ["fp_42"]
    (cached,) = read_jsonl(tmp_path / "c.jsonl")
    assert cached["judgment"]["served_model"] == "judge-model-0125-2024-01-25"
    assert cached["judgment"]["system_fingerprint"] == "fp_42"
    assert srv.auth == [None] and srv.hits == judge.n_requests == 1


def test_retry_after_is_honoured_within_the_time_budget(tmp_path):
    srv = _ScriptedServer([(429, [("Retry-After", "1")], {"error": "slow down"}), _completion()])
    try:
        judge = ChatJudge("m", srv.url, "NO_SUCH_KEY_ENV", None, timeout=2, max_retries=3, max_retry_s=10, workers=1)
        t0 = time.perf_counter()
        out = judge.judge("qa", "q", "a", "p")
        took = time.perf_counter() - t0
    finally:
        srv.close()
    assert out.ok and out.served_model == "judge-model-0125-2024-01-25"
    assert srv.hits == judge.n_requests == 2
    # the SDK's own first wait is at most 0.5 s: a second try >= 1 s later is the server's Retry-After
    assert srv.times[1] - srv.times[0] >= 0.95 and took < 4
    # a Retry-After past the request's time budget: no wait, no second try, not cached
    srv = _ScriptedServer([(503, [("Retry-After", "30")], {"error": "busy"}), _completion()])
    try:
        judge = ChatJudge("m", srv.url, "NO_SUCH_KEY_ENV", tmp_path / "c.jsonl", timeout=2, max_retries=3,
                          max_retry_s=2, workers=1)
        t0 = time.perf_counter()
        out = judge.judge("qa", "q", "a", "p")
        took = time.perf_counter() - t0
    finally:
        srv.close()
    assert out.error == "request failed: HTTP 503 (retry time of 2 s used up) after 1 tries"
    assert took < 1.5 and srv.hits == judge.n_requests == 1
    assert read_jsonl(tmp_path / "c.jsonl") == []


@pytest.mark.parametrize("code", [408, 409, 422])
def test_other_4xx_fail_that_judgment_at_once(tmp_path, code):
    srv = _ScriptedServer([(code, (), {"error": "no"}), _completion()])
    try:
        judge = ChatJudge("m", srv.url, "NO_SUCH_KEY_ENV", tmp_path / "c.jsonl", timeout=2, max_retries=3, workers=1)
        out = judge.judge("qa", "q", "a", "p")
    finally:
        srv.close()
    assert out.error == f"request failed: HTTP {code} from the judge server (not retried)"
    assert srv.hits == judge.n_requests == 1 and read_jsonl(tmp_path / "c.jsonl") == []


def test_cli_dead_judge_exits_2_and_keeps_answers(tmp_path, capsys):
    import json as _json

    from mlb_core.cli import main
    from mlb_core.evaluation.runner import make_variants, predictions_path

    model = "tiny:llava_next"
    variant = make_variants(["mlb"], ["tiny"])[0]
    pred = predictions_path(tmp_path, "msvd-qa", model, variant)
    pred.parent.mkdir(parents=True)
    recs = [{**it.to_dict(), **it.extra, "qid": it.qid, "status": "answered", "prediction": "a cat",
             "fingerprint": variant.fingerprint(model)} for it in load_benchmark("msvd-qa", FIXTURES)]
    pred.write_text("".join(_json.dumps(r) + "\n" for r in recs))
    before = pred.read_bytes()
    srv = _ScriptedServer.refusing(401)
    try:
        argv = ["eval", "--score-only", "--benchmark", "msvd-qa", "--data", str(FIXTURES), "--model", model,
                "--preset", "tiny", "--judge", "chat", "--judge-base-url", srv.url, "--out", str(tmp_path), "-q"]
        assert main(argv) == 2
    finally:
        srv.close()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: judge server {srv.url}") and "HTTP 401" in err
    assert _json.loads(pred.read_bytes().splitlines()[0]) == _json.loads(before.splitlines()[0])
    assert len(read_jsonl(pred)) == len(recs)
    main(["eval", "--score-only", "--benchmark", "msvd-qa", "--data", str(FIXTURES), "--model", model,
          "--preset", "tiny", "--judge", "chat", "--judge-base-url", _unused_url(), "--out", str(tmp_path), "-q"])
    assert "cannot be reached" in capsys.readouterr().err
