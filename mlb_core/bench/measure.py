"""Measuring memory and time on the CPU: :class:`PeakMemory`, :class:`Stopwatch`, :func:`measure`
and :func:`estimate` (how repeated timings are summarised; the estimator is always passed in)."""

from __future__ import annotations

import gc
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

Estimator = Literal["min", "median"]
ESTIMATORS: tuple[Estimator, ...] = ("min", "median")


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak resident memory of a block above the resident memory at its start (``extra``, bytes).

    Linux: resets the process's high-water mark (``echo 5 > /proc/self/clear_refs``), then
    reads ``VmHWM``. Elsewhere: samples ``psutil``'s RSS every 2 ms (may miss short peaks).
    """

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self.method = "VmHWM after clear_refs=5"
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = _status_bytes("VmRSS")
            if self.base is None:
                raise OSError
        except OSError:
            import psutil

            self.method = "psutil RSS sampler (2 ms)"
            proc = psutil.Process()
            self.base = proc.memory_info().rss
            self._peak, self._stop = self.base, threading.Event()

            def sample() -> None:
                while not self._stop.is_set():
                    self._peak = max(self._peak, proc.memory_info().rss)
                    time.sleep(0.002)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.method.startswith("VmHWM"):
            peak = _status_bytes("VmHWM") or self.base
        else:
            self._stop.set()
            self._thread.join()
            peak = self._peak
        self.peak, self.extra = peak, peak - self.base


class Stopwatch:
    """Wall-clock and process CPU seconds of a block (``wall``, ``cpu``). CPU time counts only
    this process's cores at work, so it is less sensitive than wall time to other processes
    sharing the cores (a check on the wall-clock ratios, not a replacement)."""

    def __enter__(self) -> Stopwatch:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall, self.cpu = time.perf_counter() - self._w, time.process_time() - self._c


def measure(fn: Callable[[], Any], repeats: int, cpu: list[float] | None = None) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls (CPU: no device to synchronise); their CPU
    seconds are appended to ``cpu`` when given."""
    out = []
    for _ in range(repeats):
        with Stopwatch() as sw:
            fn()
        out.append(sw.wall)
        if cpu is not None:
            cpu.append(sw.cpu)
    return out


def estimate(xs: list[float], estimator: Estimator = "min") -> float:
    """The best (``min``, default) or the ``median`` of repeated timings. On shared cores the
    interference of other processes only ever adds time, so the best of N estimates the
    undisturbed time (the reasoning of Python's ``timeit``); the median is kept in the JSON."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; use {' or '.join(ESTIMATORS)}")
    return float(min(xs) if estimator == "min" else statistics.median(xs))
