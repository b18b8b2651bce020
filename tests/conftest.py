"""Shared fixtures: tiny config-built models (milliseconds) and the embedded default (slow)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny():
    from mlb_core.backbones.tiny import build_tiny_model

    return build_tiny_model(seed=0)


@pytest.fixture(scope="session")
def tiny_eager():
    from mlb_core.backbones.tiny import build_tiny_model

    return build_tiny_model(seed=0, attn_implementation="eager")


@pytest.fixture(scope="session")
def embedded():
    from mlb_core.backbones.loading import load_model

    return load_model("embedded", device="cpu")


@pytest.fixture(scope="session")
def bunny_frames():
    from mlb_core.video import load_video

    frames, _ = load_video("bigbuckbunny.mp4", 4)
    return frames
