"""Parameters: presets are valid, nonsense is refused with a clear message."""

from __future__ import annotations

import pytest

from mlb_core.config import PRESETS, MLBParams, get_preset
from mlb_core.errors import MLBError


def test_presets():
    mlb = PRESETS["mlb"]
    assert (mlb.n_frames, mlb.segment_frames, mlb.score_layer, mlb.grid) == (50, 5, 2, (3, 3))
    assert (mlb.tail_mode, mlb.tail_grid, mlb.pool_mode) == ("pool", (2, 2), "weighted")
    for p in PRESETS.values():
        assert p.n_frames % p.segment_frames == 0


def test_frozen_and_replace():
    p = get_preset("mlb", grid=[2, 2])
    assert p.grid == (2, 2) and PRESETS["mlb"].grid == (3, 3)
    with pytest.raises(AttributeError):
        p.grid = (1, 1)
    assert p.to_dict()["grid"] == [2, 2]


@pytest.mark.parametrize("kwargs,message", [
    ({"n_frames": 50, "segment_frames": 7}, "does not divide"),
    ({"n_frames": 0}, "n_frames"),
    ({"grid": (0, 3)}, "grid"),
    ({"pool_mode": "median"}, "pool_mode"),
    ({"tail_mode": "head"}, "tail_mode"),
    ({"score_layer": -1}, "score_layer"),
    ({"budget": 0}, "budget"),
])
def test_invalid(kwargs, message):
    with pytest.raises(MLBError, match=message):
        MLBParams(**kwargs)


def test_unknown_preset_and_field():
    with pytest.raises(MLBError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(MLBError, match="unknown parameter"):
        get_preset("mlb", frames=3)
