"""Decoding returns the frames it claims: clips whose frames carry their own index as a barcode,
in the containers and codecs where decord's seeking was found wrong (docs/architecture.md,
"Videos"), decoded by ``backend="auto"``; a frame size that changes mid-stream; several video
streams; decord's internals kept out of error lines."""

from __future__ import annotations

import fractions
import logging
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from mlb_core.errors import MLBError
from mlb_core.video import load_video, probe_video

BITS, BLOCK = 8, 16  # an 8-bit index in 16-pixel blocks along the top row
W, H = BITS * BLOCK, 48


def barcode(i: int, w: int = W, h: int = H, colour: tuple[int, int, int] = (90, 90, 90)) -> np.ndarray:
    """A (h, w, 3) frame whose top row of blocks (``BLOCK`` * w / ``W`` pixels) spells ``i`` in
    binary (white = 1)."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = colour
    b = BLOCK * w // W
    for k in range(BITS):
        img[:b, k * b:(k + 1) * b] = 255 if (i >> k) & 1 else 0
    return img


def read_barcode(frame: np.ndarray) -> int:
    """The index a frame spells (the centre of each block, so scaling and coding noise do not matter)."""
    scale = frame.shape[1] / W
    c = int(BLOCK * scale / 2)
    return sum(1 << k for k in range(BITS) if frame[c, int(k * BLOCK * scale) + c].mean() > 128)


def encode(path: Path, frames: list[np.ndarray], codec: str, fmt: str | None = None,
           options: dict[str, str] | None = None, pts_start: int = 0) -> Path:
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = options or {}
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts, vf.time_base = pts_start + i, fractions.Fraction(1, 25)
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def can_encode(codec: str) -> bool:
    try:
        av.codec.Codec(codec, "w")
    except Exception:
        return False
    return True


def check_exact(path: Path, n_frames: int = 9) -> None:
    frames, idx = load_video(path, n_frames)
    assert [read_barcode(f) for f in frames] == idx.tolist()


def test_mpeg4_with_b_frames_in_avi_decodes_the_claimed_frames(tmp_path):
    """decord returned other frames than it claimed from this layout (19 of 20)."""
    path = encode(tmp_path / "bf.avi", [barcode(i) for i in range(200)], "mpeg4", options={"bf": "2", "qscale": "2"})
    info = probe_video(path)
    assert (info.container, info.codec, info.decord_exact) == ("avi", "mpeg4", False)
    check_exact(path)


def test_forcing_decord_where_it_was_not_exact_warns(tmp_path, caplog):
    """``--backend decord`` on such a file still runs decord, after one warning line that names
    the codec and container and the backend that reads it exactly."""
    path = encode(tmp_path / "bf.avi", [barcode(i) for i in range(30)], "mpeg4", options={"bf": "2", "qscale": "2"})
    with caplog.at_level(logging.WARNING, logger="mlb_core.video"):
        load_video(path, 3, backend="decord")
    assert "mpeg4 in avi, where decord was not exact" in caplog.text and "--backend auto" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mlb_core.video"):
        load_video(path, 3, backend="pyav")
        load_video(encode(tmp_path / "h.mp4", [barcode(i) for i in range(30)], "libx264"), 3, backend="decord")
    assert "not exact" not in caplog.text


def test_forcing_decord_where_it_is_not_installed_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` raises ImportError, as on macOS
    with pytest.raises(MLBError, match="decord is not installed .*--backend auto or pyav"):
        load_video("bigbuckbunny.mp4", 2, backend="decord")
    frames, _ = load_video("bigbuckbunny.mp4", 2, backend="auto")  # auto falls back to PyAV
    assert frames.shape[0] == 2


def test_concatenated_mpeg_ts_decodes_both_parts(tmp_path):
    """``cat a.ts b.ts`` with timestamps that restart: decord returned frames of the second part only."""
    a = encode(tmp_path / "a.ts", [barcode(i) for i in range(40)], "libx264", fmt="mpegts")
    b = encode(tmp_path / "b.ts", [barcode(40 + i) for i in range(40)], "libx264", fmt="mpegts")
    path = tmp_path / "ab.ts"
    path.write_bytes(a.read_bytes() + b.read_bytes())
    assert not probe_video(path).decord_exact
    frames, idx = load_video(path, 8)
    assert [read_barcode(f) for f in frames] == idx.tolist() and idx.min() < 40 <= idx.max()


def test_frame_size_change_mid_stream_is_scaled_to_the_first(tmp_path, caplog):
    a = encode(tmp_path / "a.ts", [barcode(i) for i in range(30)], "libx264", fmt="mpegts")
    b = encode(tmp_path / "b.ts", [barcode(30 + i, 2 * W, 2 * H) for i in range(30)], "libx264", fmt="mpegts")
    path = tmp_path / "grow.ts"
    path.write_bytes(a.read_bytes() + b.read_bytes())
    with caplog.at_level(logging.WARNING, logger="mlb_core.video"):
        frames, idx = load_video(path, 6)
    assert frames.shape == (6, H, W, 3)
    assert [read_barcode(f) for f in frames] == idx.tolist() and idx.max() >= 30
    assert "changes its frame size mid-stream" in caplog.text


@pytest.mark.skipif(not can_encode("libx265"), reason="no HEVC encoder in this PyAV build")
def test_hevc_goes_to_pyav(tmp_path):
    """decord's last frames of an HEVC stream were four frames late."""
    path = encode(tmp_path / "h.mp4", [barcode(i) for i in range(100)], "libx265",
                  options={"x265-params": "log-level=error"})
    assert probe_video(path).codec == "hevc" and not probe_video(path).decord_exact
    check_exact(path)


@pytest.mark.parametrize("name,codec,fmt", [("h.mp4", "libx264", None), ("v.webm", "libvpx-vp9", None),
                                            ("b.mkv", "libx264", "matroska")])
def test_where_decord_is_used_it_is_exact(tmp_path, name, codec, fmt):
    if not can_encode(codec):
        pytest.skip(f"no {codec} encoder in this PyAV build")
    opts = {"bf": "3", "g": "50"} if codec == "libx264" else {}
    path = encode(tmp_path / name, [barcode(i) for i in range(150)], codec, fmt=fmt, options=opts)
    assert probe_video(path).decord_exact
    check_exact(path)
    a, ia = load_video(path, 9, backend="decord")
    b, ib = load_video(path, 9, backend="pyav")
    assert np.array_equal(ia, ib) and [read_barcode(f) for f in a] == [read_barcode(f) for f in b]


def test_several_video_streams_warn_and_decode_the_first(tmp_path, caplog):
    path = tmp_path / "two.mkv"
    with av.open(str(path), "w", format="matroska") as out:
        small = out.add_stream("libx264", rate=25)
        big = out.add_stream("libx264", rate=25)
        for s, (w, h) in ((small, (W, H)), (big, (2 * W, 2 * H))):
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(20):
            for s, (w, h) in ((small, (W, H)), (big, (2 * W, 2 * H))):
                for packet in s.encode(av.VideoFrame.from_ndarray(barcode(i, w, h), format="rgb24")):
                    out.mux(packet)
        for s in (small, big):
            for packet in s.encode():
                out.mux(packet)
    with caplog.at_level(logging.WARNING, logger="mlb_core.video"):
        frames, idx = load_video(path, 4)
    assert frames.shape[1:3] == (H, W) and [read_barcode(f) for f in frames] == idx.tolist()
    assert "has 2 video streams; decoding the first" in caplog.text


def test_error_lines_carry_no_decoder_internals(tmp_path):
    from mlb_core.video import _reason

    raw = RuntimeError("[03:21:55] /github/workspace/src/video/video_reader.cc:270: [x.gif] Failed to measure "
                       "duration/frame-count due to broken metadata.\nStack trace: ...")
    assert _reason(raw) == "[x.gif] Failed to measure duration/frame-count due to broken metadata."
    assert _reason(OSError("[Errno 1094995529] Invalid data found when processing input")) == \
        "Invalid data found when processing input"
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video\n" * 50)
    with pytest.raises(MLBError) as info:
        load_video(bad, 4)
    assert "Errno" not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_a_stream_without_a_decoder_is_one_clear_line(tmp_path, backend):
    """A damaged sample description (the codec tag unknown): FFmpeg opens the file but has no
    decoder for its stream; that is said, not an AttributeError."""
    from mlb_core.video import sample_clip

    path = tmp_path / "unknown.mp4"
    path.write_bytes(sample_clip().read_bytes().replace(b"avc1", b"zzzz"))
    with pytest.raises(MLBError, match="no decoder for its video stream") as info:
        load_video(path, 4, backend)
    assert "\n" not in str(info.value)


def test_a_damaged_stretch_costs_its_frames_not_the_rest(tmp_path, capfd):
    """Packets the decoder rejects in the middle are skipped: frames after them are still
    sampled (before, decoding stopped at the first rejected packet)."""
    path = encode(tmp_path / "g.mp4", [barcode(i) for i in range(60)], "libx264", options={"g": "10", "bf": "0"})
    with av.open(str(path)) as c:
        packets = [(k.pos, k.size) for k in c.demux(c.streams.video[0]) if k.size]
    data = bytearray(path.read_bytes())
    for pos, size in packets[20:26]:  # frames 20-25, from a keyframe on: the decoder rejects them
        data[pos:pos + size] = bytes(size)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    frames, idx = load_video(damaged, 12, backend="pyav")
    seen = [read_barcode(f) for f in frames]
    assert max(seen) >= 50 and not set(seen) & set(range(20, 26))
    assert seen == sorted(seen) and len(set(seen)) == 12
    assert "is damaged" in capfd.readouterr().err

