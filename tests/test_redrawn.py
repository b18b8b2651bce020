"""Clips drawn another way (mlb_core.train.redrawn): the same scenes in every convention, the
truth on screen, and a video that decodes to what was drawn."""

from __future__ import annotations

import numpy as np
import pytest

from mlb_core.errors import MLBError
from mlb_core.train import redrawn, scenes
from mlb_core.video import load_video


def test_every_convention_draws_the_same_scenes_in_its_own_colours():
    specs = {conv: [redrawn.sample_redrawn((1, 2), k, conv) for k in range(18)] for conv in redrawn.CONVENTIONS}
    for conv, row in specs.items():
        assert {(s.colour, s.shape) for s in row} == {(c, s) for c in scenes.COLOURS for s in scenes.SHAPES}
        for s, ours in zip(row, specs["ours"], strict=True):
            assert (s.colour, s.shape, s.radius, s.start, s.end, s.background) == (
                ours.colour, ours.shape, ours.radius, ours.start, ours.end, ours.background)
            assert s.rgb == redrawn.CONVENTIONS[conv][s.colour]
    assert specs["css"][0].rgb != specs["ours"][0].rgb
    assert redrawn.sample_redrawn((1, 2), 3, "css") == specs["css"][3]  # a pure function of the seed
    assert redrawn.sample_redrawn((1, 3), 3, "css") != specs["css"][3]
    with pytest.raises(MLBError, match="convention"):
        redrawn.sample_redrawn(0, 0, "crayon")


@pytest.mark.parametrize("shape", scenes.SHAPES)
def test_the_shape_is_drawn_in_its_colour_where_the_spec_puts_it(shape):
    spec = redrawn.RedrawnSpec("purple", (128, 0, 128), shape, 60.0, (100.0, 120.0), (500.0, 300.0), "white", 0,
                               n_frames=3)
    frames = redrawn.render_redrawn(spec)
    assert frames.shape == (3, redrawn.HEIGHT, redrawn.WIDTH, 3) and frames.dtype == np.uint8
    for t, (cx, cy) in enumerate([spec.centre_at(t) for t in range(3)]):
        assert tuple(frames[t, round(cy), round(cx)]) == (128, 0, 128)  # the centre is inside every shape
        assert tuple(frames[t, round(cy) - 75, round(cx)]) == (255, 255, 255)  # above it: background
    area = (np.abs(frames[0].astype(int) - 255).sum(-1) > 30).sum()  # pixels the shape changed
    expected = {"square": 4 * 60**2, "circle": np.pi * 60**2, "triangle": 3 * np.sqrt(3) / 4 * 60**2}[shape]
    assert abs(area - expected) / expected < 0.05
    edge = frames[0, round(spec.start[1]), :, 1]  # across the shape on a white ground: anti-aliased edges
    assert ((edge > 5) & (edge < 250)).any()


def test_written_clip_decodes_to_the_drawing(tmp_path):
    spec = redrawn.sample_redrawn(7, 4, "tab10")
    path = redrawn.write_redrawn(spec, tmp_path / "c.mp4")
    frames, indices = load_video(path, 4)
    drawn = redrawn.render_redrawn(spec)[indices]
    assert frames.shape == drawn.shape == (4, redrawn.HEIGHT, redrawn.WIDTH, 3)
    assert np.abs(frames.astype(float) - drawn).mean() < 6.0  # H.264 at CRF 23 moves pixels a little
    again = redrawn.write_redrawn(spec, tmp_path / "again.mp4")
    assert again.read_bytes() == path.read_bytes()  # one encoder thread: a rerun writes the same bytes
