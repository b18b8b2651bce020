"""The synthetic probe: deterministic real mp4 files, evidence exactly where the CSV says."""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest

from mlb_core.errors import MLBError
from mlb_core.evaluation.benchmarks import load_benchmark
from mlb_core.evaluation.synthetic import PALETTE, POSITIONS, SHAPES, SynthConfig, generate, third_spans

SMALL = SynthConfig(n_videos=3, n_frames=24, size=(96, 72))


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe")
    return out, generate(out, SMALL)


def _rows(out):
    with open(out / "synthetic.csv", newline="") as f:
        return list(csv.DictReader(f))


def _decode(path):
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])  # (T, H, W, 3)


def _colour_pixels(frames, colour):
    """Pixels per frame within a tolerance of a palette colour: (T,)."""
    rgb = np.array(PALETTE[colour], dtype=np.int32)
    return (np.abs(frames.astype(np.int32) - rgb).max(-1) < 40).sum((1, 2))


def test_rerun_writes_byte_identical_files(probe, tmp_path):
    out, manifest = probe
    again = generate(tmp_path, SMALL)
    assert again["files"] == manifest["files"]
    for name in manifest["files"]:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes()
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_evidence_sits_only_in_its_third(probe):
    out, _ = probe
    rows = _rows(out)
    for video in sorted({r["video_name"] for r in rows}):
        frames = _decode(out / "videos" / f"{video}.mp4")
        assert frames.shape == (SMALL.n_frames, SMALL.size[1], SMALL.size[0], 3)
        for r in (r for r in rows if r["video_name"] == video and r["task"] == "open"):
            start, end = int(r["evidence_start"]), int(r["evidence_end"])
            assert (start, end) == third_spans(SMALL.n_frames)[POSITIONS.index(r["position"])]
            counts = _colour_pixels(frames, r["answer"])
            inside = np.zeros(len(frames), bool)
            inside[start:end] = True
            assert counts[inside].min() > 100, (video, r["position"])  # the shape is seen in its third ...
            assert counts[~inside].max() < 5, (video, r["position"])  # ... and nowhere else


def test_questions_are_balanced_and_well_formed(probe):
    out, manifest = probe
    rows = _rows(out)
    assert manifest["n_questions"] == len(rows) == 3 * 3 * 2
    assert Counter(r["position"] for r in rows) == {p: 6 for p in POSITIONS}
    # Latin square: every shape is asked about at every position once per form
    assert Counter((r["shape"], r["position"]) for r in rows if r["task"] == "open") == {
        (s, p): 1 for s in SHAPES for p in POSITIONS}
    for video in {r["video_name"] for r in rows}:
        colours = {r["answer"] for r in rows if r["video_name"] == video}
        assert len(colours) == 3  # each shape of a clip has its own colour
        for r in (r for r in rows if r["video_name"] == video and r["task"] == "mc"):
            options = [r[f"a{i}"] for i in range(4)]
            assert len(set(options)) == 4 and options[int(r["answer_number"])] == r["answer"]
            assert colours <= set(options)  # the clip's other colours are the distractors
    items = load_benchmark("synthetic", out)
    assert len(items) == len(rows) and {it.position for it in items} == set(POSITIONS)
    assert all(isinstance(it.extra["evidence_start"], int) for it in items)


def test_config_is_validated():
    with pytest.raises(MLBError, match="size"):
        SynthConfig(size=(95, 72))
    with pytest.raises(MLBError, match="forms"):
        SynthConfig(forms=("essay",))
    with pytest.raises(MLBError, match="n_options"):
        SynthConfig(n_options=7)


def test_cli_synth_one_form(tmp_path, capsys):
    from mlb_core.cli import main

    assert main(["synth", "--out", str(tmp_path), "--videos", "2", "--frames", "12", "--size", "64x48",
                 "--forms", "mc"]) == 0
    assert "2 videos and 6 questions" in capsys.readouterr().out
    assert {r["task"] for r in _rows(tmp_path)} == {"mc"}
    assert main(["synth", "--out", str(tmp_path), "--size", "63x48"]) == 2
    assert capsys.readouterr().err.startswith("error: size must be")
