"""Probe v2: every sampled frame has a known segment and slot; the target is in exactly one frame."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import replace

import av
import numpy as np
import pytest

from mlb_core.errors import MLBError
from mlb_core.evaluation.benchmarks import load_benchmark
from mlb_core.evaluation.probe import (
    PALETTE,
    ProbeConfig,
    clips_of,
    design,
    generate_probe,
    render_clip,
    target_frame_of,
)
from mlb_core.video import load_video

SMALL = ProbeConfig(n_frames=15, segment_frames=5, side=96, sizes=("large", "small"))


def _target_pixels(frame: np.ndarray, colour: str) -> int:
    return int((np.abs(frame.astype(int) - PALETTE[colour]).sum(-1) < 60).sum())


def test_design_crosses_segments_slots_and_sizes():
    clips = design(SMALL)
    cells = [(seg, slot, size) for seg in ("first", "middle", "last") for slot in range(1, 6)
             for size in ("large", "small")]
    assert Counter((c.segment_label, c.slot, c.size) for c in clips) == dict.fromkeys(cells, 1)
    for c in clips:
        frames = render_clip(SMALL, c)
        hits = [t for t, f in enumerate(frames) if _target_pixels(f, c.colour) > 0]
        assert hits == [target_frame_of(SMALL, c, "forward")]  # exactly one frame shows the target colour
        assert c.colour not in c.distractor_colours
        assert all(shape != c.shape for _, shape, _, _ in c.distractors)
        # distractors only in other frames
        assert target_frame_of(SMALL, c, "forward") not in {t for t, *_ in c.distractors}
    big, small = (next(c for c in clips if c.size == s) for s in ("large", "small"))
    assert _target_pixels(render_clip(SMALL, big)[target_frame_of(SMALL, big, "forward")], big.colour) > \
        4 * _target_pixels(render_clip(SMALL, small)[target_frame_of(SMALL, small, "forward")], small.colour)


def test_two_segments_have_no_middle():
    assert ProbeConfig(n_frames=10).segments() == {"first": 0, "last": 1}
    assert ProbeConfig(n_frames=50).segments() == {"first": 0, "middle": 4, "last": 9}


def test_files_rows_and_reversed_control(tmp_path):
    cfg = ProbeConfig(n_frames=10, side=96, sizes=("large",))
    manifest = generate_probe(tmp_path, cfg)
    again = generate_probe(tmp_path / "again", cfg)
    assert manifest["files"] == again["files"]  # byte-identical reruns
    rows = list(csv.DictReader(open(tmp_path / "probe.csv")))
    assert manifest["n_questions"] == len(rows) == 10 * 2 * 2  # 2 segments x 5 slots, 2 orders, 2 forms
    by_name = {r["video_name"]: r for r in rows if r["task"] == "open"}
    for name, r in by_name.items():
        t = int(r["evidence_start"])
        assert (int(r["segment"]) - 1) * 5 + int(r["slot"]) - 1 == t
        frames, idx = load_video(tmp_path / "videos" / f"{name}.mp4", cfg.n_frames)
        assert list(idx) == list(range(cfg.n_frames))  # every frame of the file is sampled once
        counts = [_target_pixels(f, r["answer"]) for f in frames]
        assert int(np.argmax(counts)) == t and sorted(counts)[-2] < counts[t] / 5
        if name.endswith("r"):  # the control: the same clip reversed, evidence mirrored
            fwd = by_name[name[:-1] + "f"]
            assert int(fwd["evidence_start"]) == cfg.n_frames - 1 - t and fwd["answer"] == r["answer"]
    mc = [r for r in rows if r["task"] == "mc"]
    assert all(r[f"a{int(r['answer_number'])}"] == r["answer"] for r in mc)
    items = load_benchmark("probe", tmp_path)
    assert {it.position for it in items} == {"first", "last"}
    assert {it.extra["slot"] for it in items} == {1, 2, 3, 4, 5} and {it.extra["order"] for it in items} == {
        "forward", "reversed"}


@pytest.mark.parametrize("kw", [dict(n_frames=12), dict(side=33), dict(sizes=("huge",)), dict(orders=()),
                                dict(distractor_share=2.0)])
def test_bad_configs(kw):
    with pytest.raises(MLBError):
        ProbeConfig(**kw)


def test_no_distractor_control_keeps_the_target(tmp_path):
    """The control writes the same clips with the distractors left out: the target's frame is
    pixel-identical, every other frame is the bare background, and the questions are the same."""
    cfg = ProbeConfig(n_frames=10, side=96, sizes=("large", "small"), orders=("forward",))
    bare = ProbeConfig(n_frames=10, side=96, sizes=("large", "small"), orders=("forward",), distractors=False)
    for c, b in zip(design(cfg), design(bare), strict=True):
        assert c.distractors and not b.distractors
        what = ("colour", "shape", "centre", "distractor_colours")
        assert [getattr(c, k) for k in what] == [getattr(b, k) for k in what]
        full, empty = render_clip(cfg, c), render_clip(bare, b)
        t = target_frame_of(cfg, c, "forward")
        assert np.array_equal(full[t], empty[t])
        assert all(np.array_equal(empty[u], empty[(t + 1) % 10]) for u in range(10) if u != t)
        assert any(not np.array_equal(full[u], empty[u]) for u in range(10) if u != t)
    generate_probe(tmp_path / "a", cfg)
    generate_probe(tmp_path / "b", bare)
    assert (tmp_path / "a" / "probe.csv").read_bytes() == (tmp_path / "b" / "probe.csv").read_bytes()


def test_clips_of_rebuilds_the_written_design(tmp_path):
    cfg = ProbeConfig(n_frames=10, side=96, sizes=("large",), distractor_share=0.25)
    generate_probe(tmp_path, cfg)
    clips = clips_of(tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "probe.csv")))
    assert set(clips) == {r["video_name"] for r in rows}
    for r in rows:
        clip = clips[r["video_name"]]
        assert (clip.colour, clip.shape) == (r["answer"], r["shape"])
        assert target_frame_of(cfg, clip, r["order"]) == int(r["evidence_start"])
        assert len(clip.distractors) == 2  # 0.25 of the 9 other frames, rounded
    with pytest.raises(MLBError, match="no probe manifest"):
        clips_of(tmp_path / "missing")
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(MLBError, match="not a probe manifest"):
        clips_of(tmp_path)


def test_sweep_shows_each_clips_target_at_every_frame(tmp_path):
    """A sweep writes sizes x repeats clips, each once per frame: the same target (colour, shape,
    size, place) in every slot and segment, under names that keep the pairs apart."""
    cfg = ProbeConfig(n_frames=10, side=96, sizes=("large", "small"), orders=("forward",), forms=("open",),
                      repeats=2, distractors=False, sweep=True)
    clips = design(cfg)
    assert len(clips) == 2 * 2 * 10
    by_index: dict[int, list] = {}
    for c in clips:
        by_index.setdefault(c.index, []).append(c)
    assert len(by_index) == 4
    for group in by_index.values():
        assert sorted(target_frame_of(cfg, c, "forward") for c in group) == list(range(10))
        assert len({(c.colour, c.shape, c.size, c.centre) for c in group}) == 1
        frames = {target_frame_of(cfg, c, "forward"): render_clip(cfg, c) for c in group}
        t0 = frames[0][0]  # the target's own frame is the same picture wherever it sits
        assert all(np.array_equal(frames[t][t], t0) for t in frames)
    assert len({c.colour for c in clips}) > 1  # clips differ from each other
    manifest = generate_probe(tmp_path, cfg)
    rows = list(csv.DictReader(open(tmp_path / "probe.csv")))
    assert manifest["n_videos"] == len(rows) == 40 and len({r["video_name"] for r in rows}) == 40
    clips_back = clips_of(tmp_path)
    for r in rows:
        c = clips_back[r["video_name"]]
        assert (int(r["segment"]), int(r["slot"])) == (c.segment + 1, c.slot)
        assert int(r["evidence_start"]) == target_frame_of(cfg, c, "forward")
        assert r["video_name"].endswith(f"-s{c.segment + 1}-{c.slot}")
    name = rows[7]["video_name"]
    frames, _ = load_video(tmp_path / "videos" / f"{name}.mp4", 10)
    counts = [_target_pixels(f, rows[7]["answer"]) for f in frames]
    assert int(np.argmax(counts)) == int(rows[7]["evidence_start"])


def test_isolated_control_writes_the_target_frame_alone(tmp_path):
    """The one-frame control: a one-frame file per clip, the target's frame exactly, with the rows
    (question, segment, slot) of the clip it comes from."""
    cfg = ProbeConfig(n_frames=10, side=96, sizes=("large",), orders=("forward",), forms=("open",),
                      distractors=False)
    alone = replace(cfg, isolated=True)
    generate_probe(tmp_path / "clips", cfg)
    generate_probe(tmp_path / "alone", alone)
    rows = list(csv.DictReader(open(tmp_path / "clips" / "probe.csv")))
    rows_alone = list(csv.DictReader(open(tmp_path / "alone" / "probe.csv")))
    assert len(rows) == len(rows_alone) == 10
    for r, a in zip(rows, rows_alone, strict=True):
        assert {k: r[k] for k in ("question_id", "question", "answer", "slot", "segment", "position")} == \
            {k: a[k] for k in ("question_id", "question", "answer", "slot", "segment", "position")}
        assert (a["evidence_start"], a["evidence_end"]) == ("0", "1")
        frames, idx = load_video(tmp_path / "alone" / "videos" / f"{a['video_name']}.mp4", 1)
        with av.open(str(tmp_path / "alone" / "videos" / f"{a['video_name']}.mp4")) as container:
            assert sum(1 for _ in container.decode(video=0)) == 1  # one frame in the file
        assert len(frames) == 1 and list(idx) == [0]
        clip_frames, _ = load_video(tmp_path / "clips" / "videos" / f"{r['video_name']}.mp4", 10)
        t = int(r["evidence_start"])
        assert np.abs(frames[0].astype(int) - clip_frames[t].astype(int)).mean() < 2
        assert _target_pixels(frames[0], a["answer"]) > 0


def test_probe_command_passes_the_controls(tmp_path):
    from mlb_core.cli import main

    assert main(["probe", "--out", str(tmp_path), "--frames", "10", "--side", "96", "--sizes", "large",
                 "--orders", "forward", "--forms", "open", "--no-distractors", "--sweep", "--isolated"]) == 0
    config = json.loads((tmp_path / "manifest.json").read_text())["config"]
    assert config["sweep"] and config["isolated"] and not config["distractors"]
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 10
