"""The LLM judge: :class:`ChatJudge` talks to any OpenAI-compatible ``/chat/completions`` server
with the judge prompts of the public protocol (:func:`mlb_core.evaluation.judge.judge_messages`).
The judge model id is pinned (default ``gpt-3.5-turbo-0125``, the anchors' judge; judges drift
by up to ~10 points between versions) and recorded with every result.

- ``base_url`` may point at a local server (vLLM, llama.cpp, Ollama ...).
- The API key is read from the environment variable named by ``api_key_env`` (default
  ``OPENAI_API_KEY``) at request time and is never stored, written or logged.
- Judgments are cached in a JSONL file keyed by (judge model, criterion, question, answer,
  prediction), so re-scoring is free and stable.
- HTTP 429, 5xx, timeouts and dropped connections are retried with exponential backoff
  (``Retry-After`` is honoured) within a bounded total time per request (``max_retry_s``);
  other HTTP errors fail that judgment at once. A server that cannot be reached (connection
  refused, unknown host) or refuses the client (HTTP 401, 403, 404) stops judging on the first
  such reply with :class:`JudgeUnavailable` (one line naming the URL and the status); finished
  judgments stay in the cache, the answers stay on disk. A reply that cannot be
  parsed is recorded (``error="unparsable"``, raw text kept) and cached, never dropped.
- Every judgment records the model the server says it served (``served_model``) and its
  ``system_fingerprint``; :meth:`ChatJudge.describe` lists those seen.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlb_core.errors import MLBError
from mlb_core.evaluation.judge import (
    DEFAULT_BASE_URL,
    DEFAULT_JUDGE_MODEL,
    DEFAULT_KEY_ENV,
    Judge,
    JudgeCache,
    Judgment,
    judge_messages,
    parse_judgment,
)


class JudgeUnavailable(MLBError):
    """The judge server cannot be reached or refuses this client: judging stops."""


FATAL_HTTP = (401, 403, 404)


class ChatJudge(Judge):
    """LLM judge over an OpenAI-compatible chat-completions server.

    Args:
        model: the pinned judge model id (recorded with every result).
        base_url: server root, e.g. ``http://127.0.0.1:8000/v1``.
        api_key_env: environment variable holding the key (read per request, never stored).
        cache: a :class:`JudgeCache` or its path.
        timeout: seconds per HTTP request.
        max_retries: retries after the first try for 429 / 5xx / timeouts / dropped connections.
        max_retry_s: the most seconds one request may spend on tries and waits.
        backoff: first wait in seconds (doubles each retry, capped at ``max_backoff``, jittered).
        temperature: ``None`` leaves it to the server (as the public protocol did).
        workers: parallel requests in :meth:`judge_many`.
        retry_unparsable: re-ask (instead of reusing) cached unparsable replies.
    """

    def __init__(self, model: str = DEFAULT_JUDGE_MODEL, base_url: str = DEFAULT_BASE_URL,
                 api_key_env: str = DEFAULT_KEY_ENV, cache: JudgeCache | str | Path | None = None,
                 timeout: float = 60.0, max_retries: int = 6, backoff: float = 1.0, max_backoff: float = 60.0,
                 temperature: float | None = None, workers: int = 4, retry_unparsable: bool = False,
                 max_retry_s: float = 120.0):
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.cache = cache if isinstance(cache, JudgeCache) else JudgeCache(cache)
        self.timeout, self.max_retries = timeout, max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.temperature, self.workers = temperature, max(1, workers)
        self.retry_unparsable = retry_unparsable
        self.max_retry_s = max_retry_s
        self.n_requests = 0  # HTTP requests sent (tries included)
        self._count_lock = threading.Lock()
        self._dead: JudgeUnavailable | None = None  # set on the first fatal reply: no more requests
        self.served_models: set[str] = set()
        self.fingerprints: set[str] = set()
        host = urllib.parse.urlsplit(self.base_url).hostname or ""
        # a server on this machine is reached directly, whatever HTTP(S)_PROXY says
        self._opener = urllib.request.build_opener(
            *([urllib.request.ProxyHandler({})] if host in ("127.0.0.1", "localhost", "::1") else []))

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.model

    def describe(self) -> dict[str, Any]:
        return {"name": self.model, "kind": "openai-chat", "base_url": self.base_url,
                "api_key_env": self.api_key_env, "temperature": self.temperature,
                "served_models": sorted(self.served_models), "system_fingerprints": sorted(self.fingerprints)}

    def check_ready(self) -> None:
        """Fail early (one line) when the official API is the target and no key is set."""
        if "api.openai.com" in self.base_url and not os.environ.get(self.api_key_env):
            raise MLBError(f"the judge {self.model} at {self.base_url} needs an API key in ${self.api_key_env} "
                           "(or point --judge-base-url at a local OpenAI-compatible server, or use --no-score)")

    # -- HTTP --
    def _fatal(self, url: str, why: str) -> JudgeUnavailable:
        exc = JudgeUnavailable(f"judge server {url} {why}; judging stopped (answers and finished judgments are "
                               "kept: fix --judge-base-url / the API key, then mlb eval --score-only)")
        with self._count_lock:
            self._dead = self._dead or exc
        return exc

    def _post(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """POST with retries; returns the reply's message content and its ``model`` /
        ``system_fingerprint``. Raises ``RuntimeError`` with a short reason when every try failed
        (the key never appears in it), :class:`JudgeUnavailable` when the server cannot be
        reached or refuses the client."""
        url = f"{self.base_url}/chat/completions"
        data = json.dumps(body).encode()
        last = "no try made"
        start = time.monotonic()
        tries = 0
        for attempt in range(self.max_retries + 1):
            if self._dead is not None:
                raise self._dead
            headers = {"Content-Type": "application/json"}
            key = os.environ.get(self.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
            req = urllib.request.Request(url, data=data, headers=headers, method="POST")
            wait = None
            tries += 1
            with self._count_lock:
                self.n_requests += 1
            try:
                with self._opener.open(req, timeout=self.timeout) as resp:
                    payload = resp.read()
                try:
                    reply = json.loads(payload)
                    content = str(reply["choices"][0]["message"]["content"] or "")
                    meta = {"served_model": reply.get("model"), "system_fingerprint": reply.get("system_fingerprint")}
                    return content, {k: (str(v) if v is not None else None) for k, v in meta.items()}
                except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                    last = "malformed response body"  # a proxy's HTML page, a cut body: transient
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                if exc.code in FATAL_HTTP:
                    raise self._fatal(url, f"answered HTTP {exc.code} ({exc.reason})") from None
                if exc.code != 429 and exc.code < 500:
                    raise RuntimeError(f"{last} from the judge server (not retried)") from None
                wait = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            except TimeoutError:
                last = f"timeout after {self.timeout:g} s"
            except urllib.error.URLError as exc:
                reason = exc.reason
                if isinstance(reason, TimeoutError):
                    last = f"timeout after {self.timeout:g} s"
                elif isinstance(reason, (ConnectionRefusedError, socket.gaierror)) or (
                        isinstance(reason, OSError) and not isinstance(reason, ConnectionError)):
                    raise self._fatal(url, f"cannot be reached ({type(reason).__name__}: "
                                           f"{getattr(reason, 'strerror', None) or reason})") from None
                else:
                    last = f"connection error ({type(reason).__name__})"
            except (ConnectionError, OSError) as exc:  # reset / dropped mid-read: transient
                last = f"connection error ({type(exc).__name__})"
            if attempt < self.max_retries:
                delay = min(self.max_backoff, self.backoff * 2 ** attempt) * (0.5 + random.random() / 2)
                delay = min(self.max_backoff, max(delay, wait or 0.0))
                if time.monotonic() - start + delay > self.max_retry_s:
                    last += f" (retry time of {self.max_retry_s:g} s used up)"
                    break
                time.sleep(delay)
        raise RuntimeError(f"{last} after {tries} tries")

    def judge(self, criterion: str, question: str, answer: str, prediction: str,
              question2: str = "", prediction2: str = "") -> Judgment:
        texts = (question, answer, prediction) + ((question2, prediction2) if criterion == "consistency" else ())
        key = JudgeCache.key(self.model, criterion, *texts)
        cached = self.cache.get(key)
        if cached is not None and not (self.retry_unparsable and cached.get("error")):
            result = Judgment(**{k: v for k, v in cached.items() if k in Judgment.__dataclass_fields__})
            self._seen(result)
            return result
        body: dict[str, Any] = {"model": self.model,
                                "messages": judge_messages(criterion, question, answer, prediction,
                                                           question2, prediction2)}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        try:
            raw, meta = self._post(body)
        except RuntimeError as exc:  # transient failure: recorded in the result, not cached
            return Judgment(None, None, "", f"request failed: {exc}", self.model)
        try:
            pred, score = parse_judgment(raw, need_pred=criterion == "qa")
            result = Judgment(pred, score, raw, None, self.model, **meta)
        except ValueError as exc:
            result = Judgment(None, None, raw, f"unparsable: {exc}", self.model, **meta)
        self._seen(result)
        self.cache.put(key, result.to_dict(), {"judge": self.model, "criterion": criterion})
        return result

    def _seen(self, result: Judgment) -> None:
        with self._count_lock:
            if result.served_model:
                self.served_models.add(result.served_model)
            if result.system_fingerprint:
                self.fingerprints.add(result.system_fingerprint)

    def judge_many(self, requests: list[dict[str, str]], progress: Callable[[int], None] | None = None
                   ) -> list[Judgment]:
        if self.workers == 1 or len(requests) < 2:
            return super().judge_many(requests, progress)

        def one(req: dict[str, str]) -> Judgment:
            out = self.judge(**req)
            if progress:
                progress(1)
            return out

        pool = ThreadPoolExecutor(self.workers)
        try:
            return list(pool.map(one, requests))
        finally:  # on a fatal reply, queued requests are dropped, not sent
            pool.shutdown(wait=True, cancel_futures=True)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
