"""Measuring memory and time: :class:`PeakMemory`, :class:`Stopwatch`, :func:`measure` and
:func:`estimate` (how repeated timings are summarised; the estimator is always passed in).

Clocks (docs/architecture.md, "Bench"): work on a CUDA device is timed with CUDA events on the
device's stream after synchronising it, and :func:`measure` first runs warm-up calls there
(kernel selection, allocator, lazy initialisation); work on the CPU is timed with
``time.perf_counter`` and no warm-up, as before. :func:`bench_device` picks the device
(``auto``: CUDA when present)."""

from __future__ import annotations

import gc
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import torch

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


def bench_device(name: str = "auto") -> torch.device:
    """The device of the measured work: ``auto`` = CUDA when present, else the CPU; asking for
    CUDA without it is an error (:class:`~mlb_core.errors.MLBError`)."""
    from mlb_core.errors import MLBError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MLBError(f"--device {name}: no CUDA device here")
    return device


def uses_events(device: torch.device | str | None) -> bool:
    """Whether work on ``device`` is timed with CUDA events (a CUDA device) or ``perf_counter``."""
    return device is not None and torch.device(device).type == "cuda"


def default_warmup(device: torch.device | str | None, gpu_warmup: int = 2) -> int:
    """Untimed calls before the timed ones: ``gpu_warmup`` on a CUDA device, none on the CPU (there
    the best-of estimator already drops a slow first run)."""
    return gpu_warmup if uses_events(device) else 0


def clock_name(device: torch.device | str | None, warmup: int) -> str:
    """How times on ``device`` are taken, for ``bench.json``."""
    if uses_events(device):
        return f"CUDA events after torch.cuda.synchronize, {warmup} warm-up run(s)"
    return "time.perf_counter (wall clock), no warm-up"


class Stopwatch:
    """Wall-clock and process CPU seconds of a block (``wall``, ``cpu``). CPU time counts only
    this process's cores at work, so it is less sensitive than wall time to other processes
    sharing the cores (a check on the wall-clock ratios, not a replacement).

    On a CUDA ``device`` the block's ``wall`` is the time between two CUDA events recorded on
    the device's current stream: the device is synchronised before the start event (earlier
    queued work is not counted), and the end event is waited for (kernels the block only
    launched are counted). ``host_wall`` is ``perf_counter``'s reading of the same block (on
    the CPU it is ``wall``).

    Args:
        device: where the timed work runs; ``None`` or a CPU device: ``perf_counter``.
        cuda: the ``torch.cuda`` module (default); tests pass a stand-in, as there is no GPU here.
    """

    def __init__(self, device: torch.device | str | None = None, cuda: Any = None) -> None:
        self.device = torch.device(device) if device is not None else None
        self.events = uses_events(device)
        self._cuda = cuda if cuda is not None else torch.cuda

    def __enter__(self) -> Stopwatch:
        if self.events:
            stream = self._cuda.current_stream(self.device)
            self._cuda.synchronize(self.device)
            self._start = self._cuda.Event(enable_timing=True)
            self._end = self._cuda.Event(enable_timing=True)
            self._start.record(stream)
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.events:
            self._end.record(self._cuda.current_stream(self.device))
            self._end.synchronize()
        self.host_wall, self.cpu = time.perf_counter() - self._w, time.process_time() - self._c
        self.wall = self._start.elapsed_time(self._end) / 1e3 if self.events else self.host_wall


def measure(fn: Callable[[], Any], repeats: int, cpu: list[float] | None = None,
            device: torch.device | str | None = None, warmup: int | None = None, cuda: Any = None) -> list[float]:
    """Seconds of ``repeats`` calls, each timed by a :class:`Stopwatch` on ``device``, after
    ``warmup`` untimed calls (default :func:`default_warmup`: 2 on a CUDA device, 0 on the CPU);
    their CPU seconds are appended to ``cpu`` when given. ``cuda``: see :class:`Stopwatch`."""
    for _ in range(default_warmup(device) if warmup is None else warmup):
        fn()
    out = []
    for _ in range(repeats):
        with Stopwatch(device, cuda) as sw:
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
