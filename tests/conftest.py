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


@pytest.fixture
def edge_tower():
    """A tiny LLaVA-NeXT whose 336 px CLIP tower has the structured, edge-energy init the
    ``outline`` recipes start from: (model, image processor, tower, reserved dimensions)."""
    from mlb_core.backbones.tiny import build_tiny_model
    from mlb_core.train.tower_init import edge_energy_init, structured_init

    tiny = build_tiny_model("llava_next", prompt_family="smollm2",
                            vision_overrides=dict(image_size=336, patch_size=14, hidden_size=64, intermediate_size=128))
    model = tiny.model
    model.config.vision_feature_layer = -2
    tower = model.model.vision_tower
    structured_init(tower, seed=0)
    return model, tiny.image_processor, tower, edge_energy_init(tower)
