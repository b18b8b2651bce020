"""The LLM judge: :class:`ChatJudge` talks to any OpenAI-compatible ``/chat/completions`` server
through the official ``openai`` Python SDK, with the judge prompts of the public protocol
(:func:`mlb_core.evaluation.judge.judge_messages`). The judge model id is pinned (default
``gpt-3.5-turbo-0125``, the anchors' judge; judges drift by up to ~10 points between versions)
and recorded with every result.

- ``base_url`` may point at a local server (vLLM, llama.cpp, Ollama ...); a server on this
  machine (127.0.0.1, localhost, ::1) is reached directly, whatever ``HTTP(S)_PROXY`` says.
- The API key is read from the environment variable named by ``api_key_env`` (default
  ``OPENAI_API_KEY``) at request time (the SDK calls back for it before every try) and is never
  written or logged by this module (the SDK keeps the last value it read on its in-memory client
  and redacts it from its own logs). The SDK refuses an empty key, so without one it is given the
  placeholder ``"unused"``, whose ``Authorization`` header is dropped before sending: a local
  server without a key sees no header at all.
- Judgments are cached in a JSONL file keyed by (judge model, criterion, question, answer,
  prediction), so re-scoring is free and stable.
- HTTP 429, 5xx, timeouts, dropped connections and malformed reply bodies are retried by the
  SDK (``max_retries``; its exponential backoff from 0.5 s doubling to 8 s, jittered;
  ``Retry-After`` / ``Retry-After-Ms`` up to 120 s is honoured, a longer one is not retried). The
  total per request is bounded by a wrapper, not by the SDK settings: every try goes through
  this module's HTTP client, which ends the SDK's retry loop (without a further try) when the
  next wait would take the request past ``max_retry_s``; ``timeout`` is the SDK's per-try
  timeout. Other HTTP 4xx fail that judgment at once (the SDK's retries of 408 / 409 included).
  A server that cannot be reached (connection refused, unknown host) or refuses the client
  (HTTP 401, 403, 404) stops judging on the first such reply with :class:`JudgeUnavailable`
  (one line naming the URL and the status); no further request is sent, queued ones are dropped,
  finished judgments stay in the cache, the answers stay on disk. A reply that cannot be
  parsed is recorded (``error="unparsable"``, raw text kept) and cached, never dropped.
- Every judgment records the model the server says it served (``served_model``) and its
  ``system_fingerprint``; :meth:`ChatJudge.describe` lists those seen.
- ``n_requests`` counts the HTTP requests sent, retries included.

``openai`` is imported when the first :class:`ChatJudge` is made (it takes seconds), so
importing this module stays cheap.
"""

from __future__ import annotations

import email.utils
import functools
import json
import os
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2

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
LOOPBACK = ("127.0.0.1", "localhost", "::1")
NO_KEY = "unused"  # the SDK needs a non-empty key; its header is dropped before sending
# the SDK's retry schedule (openai._constants), mirrored to foresee its next wait
SDK_FIRST_WAIT, SDK_MAX_WAIT, SDK_MAX_RETRY_AFTER = 0.5, 8.0, 120.0


class _Stop(Exception):  # noqa: N818 - a signal, not an error to show
    """Ends the SDK's retry loop at once: it retries only timeouts and httpx2 request errors, any
    other exception leaves it. ``fatal`` is set when judging must stop."""

    def __init__(self, reason: str, fatal: JudgeUnavailable | None = None) -> None:
        super().__init__(reason)
        self.reason, self.fatal = reason, fatal


class _MalformedBody(httpx2.DecodingError):
    """A 2xx reply whose body is no chat completion (a proxy's HTML page, a cut body): an httpx2
    request error to the SDK, so retried like a dropped connection."""


class _TryClient(httpx2.Client):
    """An httpx2 client that hands every try (``send``) to ``on_send`` with a thunk sending it."""

    def __init__(self, on_send: Callable[[Callable[[], httpx2.Response], httpx2.Request], httpx2.Response],
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_send = on_send

    def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:  # type: ignore[override]
        return self._on_send(functools.partial(super().send, request, **kwargs), request)


class ChatJudge(Judge):
    """LLM judge over an OpenAI-compatible chat-completions server (the ``openai`` SDK).

    Args:
        model: the pinned judge model id (recorded with every result).
        base_url: server root, e.g. ``http://127.0.0.1:8000/v1``.
        api_key_env: environment variable holding the key (read per request, never stored).
        cache: a :class:`JudgeCache` or its path.
        timeout: seconds per HTTP try (the SDK's ``timeout``).
        max_retries: retries after the first try for 429 / 5xx / timeouts / dropped connections /
            malformed bodies (the SDK's ``max_retries``; the SDK sets the waits).
        max_retry_s: the most seconds one request may spend on tries and waits: no retry whose
            wait would pass it (a try itself may still run ``timeout`` past it).
        temperature: ``None`` leaves it to the server (as the public protocol did).
        workers: parallel requests in :meth:`judge_many`.
        retry_unparsable: re-ask (instead of reusing) cached unparsable replies.
    """

    def __init__(self, model: str = DEFAULT_JUDGE_MODEL, base_url: str = DEFAULT_BASE_URL,
                 api_key_env: str = DEFAULT_KEY_ENV, cache: JudgeCache | str | Path | None = None,
                 timeout: float = 60.0, max_retries: int = 6, temperature: float | None = None,
                 workers: int = 4, retry_unparsable: bool = False, max_retry_s: float = 120.0):
        import openai  # seconds to import: only when a chat judge is made

        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.cache = cache if isinstance(cache, JudgeCache) else JudgeCache(cache)
        self.timeout, self.max_retries = timeout, max_retries
        self.temperature, self.workers = temperature, max(1, workers)
        self.retry_unparsable = retry_unparsable
        self.max_retry_s = max_retry_s
        self.n_requests = 0  # HTTP requests sent (tries included)
        self._count_lock = threading.Lock()
        self._dead: JudgeUnavailable | None = None  # set on the first fatal reply: no more requests
        self._local = threading.local()  # the request in flight on this thread: start, tries, last error
        self.served_models: set[str] = set()
        self.fingerprints: set[str] = set()
        host = urllib.parse.urlsplit(self.base_url).hostname or ""
        # a server on this machine is reached directly, whatever HTTP(S)_PROXY says
        http = _TryClient(self._send_try, trust_env=host not in LOOPBACK, timeout=timeout, follow_redirects=True)
        self._client = openai.OpenAI(api_key=self._api_key, base_url=self.base_url, timeout=timeout,
                                     max_retries=max_retries, http_client=http)

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

    def close(self) -> None:
        """Close the HTTP connections (the judge cannot be used afterwards)."""
        self._client.close()

    # -- HTTP --
    def _api_key(self) -> str:
        """The SDK's key provider, called before every try: the key as the environment has it now."""
        return os.environ.get(self.api_key_env) or NO_KEY

    def _fatal(self, why: str) -> JudgeUnavailable:
        exc = JudgeUnavailable(f"judge server {self.base_url}/chat/completions {why}; judging stopped (answers and "
                               "finished judgments are kept: fix --judge-base-url / the API key, then mlb eval "
                               "--score-only)")
        with self._count_lock:
            self._dead = self._dead or exc
        return self._dead

    def _send_try(self, send: Callable[[], httpx2.Response], request: httpx2.Request) -> httpx2.Response:
        """One HTTP try inside the SDK's retry loop: counts it, sorts the outcome, and raises
        :class:`_Stop` where the SDK must not try again (a fatal reply, another 4xx, the time
        budget spent). Returns the response (2xx, or a 429 / 5xx for the SDK to retry)."""
        st = self._local
        if self._dead is not None:
            raise _Stop("judging stopped", self._dead)
        if st.tries and time.monotonic() - st.start > self.max_retry_s:  # a try ran long: no more
            raise _Stop(f"{st.last} (retry time of {self.max_retry_s:g} s used up) after {st.tries} tries")
        if request.headers.get("Authorization") == f"Bearer {NO_KEY}":
            del request.headers["Authorization"]
        st.tries += 1
        with self._count_lock:
            self.n_requests += 1
        try:
            response = send()
        except httpx2.ConnectError as exc:  # refused / unknown host: fatal; reset while connecting: transient
            cause = _os_error(exc)
            if not isinstance(cause, ConnectionError) or isinstance(cause, ConnectionRefusedError):
                why = f"{type(cause).__name__}: {getattr(cause, 'strerror', None) or cause}" if cause else exc
                raise _Stop("unreachable", self._fatal(f"cannot be reached ({why})")) from None
            self._may_retry(f"connection error ({type(cause).__name__})")
            raise
        except httpx2.TimeoutException:
            self._may_retry(f"timeout after {self.timeout:g} s")
            raise
        except Exception as exc:  # dropped mid-read and the like: the SDK retries httpx2 request errors
            self._may_retry(f"connection error ({type(exc).__name__})")
            raise
        code = response.status_code
        if code in FATAL_HTTP:
            response.close()
            raise _Stop(f"HTTP {code}", self._fatal(f"answered HTTP {code} ({response.reason_phrase})"))
        if code == 429 or code >= 500:
            self._may_retry(f"HTTP {code}", response)
            return response
        if code >= 400:
            response.close()
            raise _Stop(f"HTTP {code} from the judge server (not retried)")
        try:
            message = json.loads(response.read())["choices"][0]["message"]
            if not isinstance(message, dict):
                raise TypeError(type(message).__name__)
        except (ValueError, KeyError, IndexError, TypeError):
            response.close()
            self._may_retry("malformed response body")
            raise _MalformedBody("malformed response body", request=request) from None
        return response

    def _may_retry(self, why: str, response: httpx2.Response | None = None) -> None:
        """Records ``why`` this try failed; raises :class:`_Stop` when the SDK would retry but its
        next wait would take the request past ``max_retry_s``."""
        st = self._local
        st.last = why
        if st.tries > self.max_retries:  # the SDK gives up by itself
            return
        wait = _sdk_wait(st.tries - 1, response.headers if response is not None else None)
        if time.monotonic() - st.start + wait > self.max_retry_s:
            if response is not None:
                response.close()
            raise _Stop(f"{why} (retry time of {self.max_retry_s:g} s used up) after {st.tries} tries")

    def _post(self, body: dict[str, Any]) -> tuple[str, dict[str, str | None]]:
        """One chat completion, the SDK retrying; returns the reply's message content and its
        ``model`` / ``system_fingerprint``. Raises ``RuntimeError`` with a short reason when every
        try failed (the key never appears in it), :class:`JudgeUnavailable` when the server cannot
        be reached or refuses the client."""
        import openai

        if self._dead is not None:
            raise self._dead
        st = self._local
        st.start, st.tries, st.last = time.monotonic(), 0, "no try made"
        try:
            reply = self._client.chat.completions.create(**body)
        except _Stop as exc:
            if exc.fatal is not None:
                raise exc.fatal from None
            raise RuntimeError(exc.reason) from None
        except openai.OpenAIError:  # the SDK's retries spent: 429 / 5xx / timeout / connection / body
            raise RuntimeError(f"{st.last} after {st.tries} tries") from None
        try:
            content = str(reply.choices[0].message.content or "")
            meta = {"served_model": reply.model, "system_fingerprint": reply.system_fingerprint}
        except (AttributeError, IndexError, TypeError):  # a body the SDK could not read as a completion
            raise RuntimeError(f"malformed response body after {st.tries} tries") from None
        return content, {k: (str(v) if v is not None else None) for k, v in meta.items()}

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


def _sdk_wait(retries_taken: int, headers: httpx2.Headers | None) -> float:
    """The most the SDK waits before its next try: the server's ``Retry-After`` when it honours
    it (0 < s <= 120), else its backoff bound (it waits 75-100 % of that)."""
    after = _retry_after(headers)
    if after is not None and 0 < after <= SDK_MAX_RETRY_AFTER:
        return after
    return min(SDK_FIRST_WAIT * 2.0 ** min(retries_taken, 64), SDK_MAX_WAIT)


def _retry_after(headers: httpx2.Headers | None) -> float | None:
    """Seconds asked by ``Retry-After-Ms`` / ``Retry-After`` (seconds or an HTTP date), as the SDK reads them."""
    if headers is None:
        return None
    for name, unit in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return float(value) / unit
            except ValueError:
                continue
    try:
        date = email.utils.parsedate_tz(headers.get("retry-after"))
        return None if date is None else float(email.utils.mktime_tz(date) - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def _os_error(exc: BaseException) -> OSError | None:
    """The operating-system error under an httpx2 error (its cause chain), if any."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    return seen
