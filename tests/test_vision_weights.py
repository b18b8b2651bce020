"""The committed vision side: export, load back, and the embedded build that uses it."""

from __future__ import annotations

import json

import pytest
import torch

from mlb_core.backbones import vision_weights
from mlb_core.backbones.tiny import build_tiny_model
from mlb_core.errors import MLBError


def test_export_and_load_round_trip(tmp_path):
    src = build_tiny_model("llava_next", seed=1).model
    dst = build_tiny_model("llava_next", seed=2).model
    lm_before = {k: v.clone() for k, v in dst.state_dict().items() if k.startswith("model.language_model")}
    vision_weights.export_vision(src, tmp_path / "w", {"MODEL_CARD.md": "card\n"})
    assert vision_weights.available(tmp_path / "w") and (tmp_path / "w" / "MODEL_CARD.md").read_text() == "card\n"
    meta = vision_weights.read_config(tmp_path / "w")
    assert meta["vision_config"]["hidden_size"] == src.config.vision_config.hidden_size
    assert meta["vision_feature_layer"] == src.config.vision_feature_layer
    vision_weights.load_vision_into(dst, tmp_path / "w")
    for k, v in vision_weights.vision_state(src).items():
        torch.testing.assert_close(dst.state_dict()[k], v, rtol=0, atol=0)
    for k, v in lm_before.items():  # the language model is untouched
        torch.testing.assert_close(dst.state_dict()[k], v, rtol=0, atol=0)
    digest = vision_weights.digest(tmp_path / "w")
    vision_weights.export_vision(dst, tmp_path / "w")  # same tensors: same digest
    assert vision_weights.digest(tmp_path / "w") == digest


def test_export_keeps_what_else_the_folder_holds(tmp_path):
    """Exporting into a folder that holds other files (a README, another run's sub-folder) replaces
    the weights and keeps those files: the atomic swap never drops them with the old folder."""
    model = build_tiny_model("llava_next", seed=1).model
    (tmp_path / "w" / "seed1").mkdir(parents=True)
    (tmp_path / "w" / "README.md").write_text("the decision rule\n")
    (tmp_path / "w" / "seed1" / "training_log.json").write_text("{}\n")
    (tmp_path / "w" / "MODEL_CARD.md").write_text("old card\n")
    vision_weights.export_vision(model, tmp_path / "w", {"MODEL_CARD.md": "new card\n"})
    assert vision_weights.available(tmp_path / "w")
    assert (tmp_path / "w" / "README.md").read_text() == "the decision rule\n"
    assert (tmp_path / "w" / "seed1" / "training_log.json").read_text() == "{}\n"
    assert (tmp_path / "w" / "MODEL_CARD.md").read_text() == "new card\n"  # what the export writes wins
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # no temporary or backup folder left


def test_mismatched_or_corrupt_files_are_one_line_errors(tmp_path):
    big = build_tiny_model("llava_next", seed=1).model
    vision_weights.export_vision(big, tmp_path / "w")
    other = build_tiny_model("llava", seed=1).model  # another layout of names
    with pytest.raises(MLBError, match="does not match"):
        vision_weights.load_vision_into(other, tmp_path / "w")
    (tmp_path / "w" / vision_weights.TENSORS).write_bytes(b"garbage")
    with pytest.raises(MLBError, match="cannot read"):
        vision_weights.load_vision_into(big, tmp_path / "w")


@pytest.mark.slow
def test_embedded_build_uses_the_committed_weights(tmp_path, monkeypatch):
    """A build with weights present loads them (not the random calibration), marks its config,
    and is rebuilt when the weights change."""
    from transformers import LlavaNextForConditionalGeneration

    from mlb_core.backbones import embedded

    monkeypatch.setenv("MLB_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "weights"
    monkeypatch.setattr(vision_weights, "WEIGHTS_DIR", weights)
    base = LlavaNextForConditionalGeneration.from_pretrained(str(embedded.ensure_embedded(trained=False)))
    assert json.loads((embedded.cache_dir() / f"{embedded.EMBEDDED_NAME}-untrained" / "config.json").read_text()
                      )["mlb_vision"] == "random"
    with torch.no_grad():
        base.model.multi_modal_projector.linear_2.bias.fill_(0.125)
    vision_weights.export_vision(base, weights)
    folder = embedded.ensure_embedded()
    config = json.loads((folder / "config.json").read_text())
    assert config["mlb_vision"] == embedded.vision_tag() != "random"
    assert "quantization_config" not in config["text_config"]  # the LM's weights are fp32, not GGUF blocks
    built = LlavaNextForConditionalGeneration.from_pretrained(str(folder), dtype=torch.bfloat16)
    assert getattr(built, "hf_quantizer", None) is None and built.dtype == torch.bfloat16  # no GGUF quantizer
    built = LlavaNextForConditionalGeneration.from_pretrained(str(folder))
    assert torch.all(built.model.multi_modal_projector.linear_2.bias == 0.125)
    mtime = (folder / "config.json").stat().st_mtime_ns
    assert embedded.ensure_embedded() == folder and (folder / "config.json").stat().st_mtime_ns == mtime  # kept
    with torch.no_grad():
        base.model.multi_modal_projector.linear_2.bias.fill_(0.25)
    vision_weights.export_vision(base, weights)
    built = LlavaNextForConditionalGeneration.from_pretrained(str(embedded.ensure_embedded()))
    assert torch.all(built.model.multi_modal_projector.linear_2.bias == 0.25)  # rebuilt


def test_committed_weights_match_their_card_and_log():
    """The committed folder is one consistent set: the tensors are the ones the training log
    hashed, the model card is what the log and the held-out metrics render to, and the size
    is within the 20 MB the repository allows."""
    from mlb_core.train.card import model_card

    folder = vision_weights.WEIGHTS_DIR
    if not (folder / "training_log.json").exists():
        pytest.skip("no committed vision weights")
    log = json.loads((folder / "training_log.json").read_text())
    summary = log.get("summary", log)
    tensors = folder / vision_weights.TENSORS
    assert tensors.stat().st_size <= 20 * 2**20
    metrics = folder / "heldout_metrics.json"
    sight = json.loads(metrics.read_text()) if metrics.exists() else None
    repro_file = folder / "reproducibility.json"
    repro = json.loads(repro_file.read_text()) if repro_file.exists() else None
    assert (folder / "MODEL_CARD.md").read_text() == model_card(summary, sight, repro)
    assert sight is not None, "the committed weights have no held-out metrics (mlb heldout --out ...)"
    # the training run hashed the vision tensors it saved; the export holds the same values
    from safetensors.torch import load_file

    state = load_file(str(tensors))
    assert any(k.startswith("model.vision_tower.") for k in state)
    assert summary["trained_params"] == sum(v.numel() for k, v in state.items()
                                            if not k.startswith("model.image_newline"))


@pytest.mark.parametrize("accs, words", [
    (None, "untrained"),
    ((0.2, 0.5), "sees little"),
    ((0.3, 0.95), "only where the model sees"),
    ((0.85, 1.0), "not video understanding in general"),
])
def test_caveat_follows_the_held_out_metrics(tmp_path, accs, words):
    """The caption caveat is read off heldout_metrics.json: its range and its wording change
    with what the model was measured to see (the SEES_WELL threshold)."""
    for name in (vision_weights.TENSORS, vision_weights.CONFIG):
        (tmp_path / name).write_text("x")
    if accs is not None:
        conds = {f"c{i}": {"accuracy": a} for i, a in enumerate(accs)}
        (tmp_path / "heldout_metrics.json").write_text(json.dumps({"conditions": conds}))
    text = vision_weights.caveat(tmp_path)
    assert words in text
    if accs is not None:
        assert f"{100 * min(accs):.0f}-{100 * max(accs):.0f}%" in text


@pytest.mark.slow
def test_embedded_build_of_another_weights_folder(tmp_path, monkeypatch):
    """``--model embedded:<folder>``: the embedded default with the vision side of a weights folder
    that ``mlb train-vision --out`` wrote (a candidate recipe's), built in a folder of its own;
    a folder without weights is a one-line error."""
    from mlb_core.backbones import embedded
    from mlb_core.backbones.loading import load_model

    base = load_model("embedded").model  # the committed build
    with torch.no_grad():
        base.model.multi_modal_projector.linear_2.bias.fill_(0.375)
    vision_weights.export_vision(base, tmp_path / "candidate")
    monkeypatch.setenv("MLB_CACHE", str(tmp_path / "cache"))
    other = load_model(f"embedded:{tmp_path / 'candidate'}").model
    assert torch.all(other.model.multi_modal_projector.linear_2.bias == 0.375)
    folder = embedded.ensure_embedded(weights=tmp_path / "candidate")
    assert folder.parent == tmp_path / "cache" and folder.name != embedded.EMBEDDED_NAME
    assert json.loads((folder / "config.json").read_text())["mlb_vision"] == embedded.vision_tag(
        weights=tmp_path / "candidate") != embedded.vision_tag()
    with pytest.raises(MLBError, match="not a vision weights folder"):
        load_model(f"embedded:{tmp_path}")
