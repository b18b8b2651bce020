"""Wall-clock timing of pipeline stages, synchronising the device before reading the clock."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def synchronize(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def timed(timings: dict[str, float], name: str, device: torch.device | str | None = None) -> Iterator[None]:
    """Add the seconds spent in the block to ``timings[name]``."""
    synchronize(device)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        synchronize(device)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
