"""Retraining from the same seed gives the same weights (the model card's reproducibility claim),
checked on a short budget: the stages are planned by the cost model, not the clock, so two runs
with the same seed and thread count take the same steps on the same data."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def _train(tmp_path, name, seed, threads=1):
    from dataclasses import replace

    from mlb_core.backbones.embedded import ensure_embedded
    from mlb_core.train.vision import RECIPES, train_vision

    # the outline recipe (committed 2026-12-03 to 12-04), a smaller read-out fit and (if it saturates
    # slots) a smaller stage-4 fit
    recipe = replace(RECIPES["outline"], outline_fit_frames=24, saturate_frames=16)
    return train_vision(tmp_path / name, seed=seed, minutes_budget=0.1, threads=threads,
                        source=ensure_embedded(trained=False), recipe=recipe)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    first = _train(tmp_path, "a", seed=0)
    again = _train(tmp_path, "b", seed=0)
    other = _train(tmp_path, "c", seed=1)
    assert first["steps"] == again["steps"] and first["layout_counts"] == again["layout_counts"]
    assert first["vision_sha256"] == again["vision_sha256"], "same seed, same threads: bit-identical weights"
    assert other["vision_sha256"] != first["vision_sha256"]
    # the committed recipe fits the slot read-out in closed form and trains the codebook in stage 3
    # alone: the projector's columns leave stage 1's vectors
    assert first["recipe"]["lr_codebook_finetune"] > 0 and first["steps"]["regress"] == 0
    assert first["outline_fit"]["frames"] == 24 and first["outline_fit"]["colour_accuracy"] > 0.5
    assert not _codebook_in_projector(tmp_path / "a")


def _codebook_in_projector(folder) -> bool:
    """Whether the projector's last layer still holds stage 1's codebook (codebook.safetensors)."""
    from types import SimpleNamespace

    import torch
    from safetensors.torch import load_file

    from mlb_core.train.saturate import codebook_columns, slot_gains
    from mlb_core.train.vision import N_SLOTS

    book = load_file(str(folder / "codebook.safetensors"))
    want = torch.cat([book["colour"], book["shape"], book["background"][None]]).T  # (D, N_SLOTS)
    state = load_file(str(folder / "vision.safetensors"))
    w1, b1 = state["model.multi_modal_projector.linear_1.weight"], state["model.multi_modal_projector.linear_1.bias"]
    lin = state["model.multi_modal_projector.linear_2.weight"]
    proj = SimpleNamespace(linear_1=SimpleNamespace(weight=w1, bias=b1, out_features=len(w1)),
                           linear_2=SimpleNamespace(weight=lin))
    paired = slot_gains(proj, N_SLOTS)  # saturated slots (stage 4) use unit N_SLOTS + j beside slot j
    assert lin.shape[1] > 2 * N_SLOTS and not lin[:, 2 * N_SLOTS:].any()  # the other units stay zero
    assert all(bool(lin[:, N_SLOTS + j].any()) == (j in paired) for j in range(N_SLOTS))
    return torch.allclose(codebook_columns(proj, N_SLOTS), want)


def test_training_into_a_weights_folder_drops_the_old_weights_records(tmp_path):
    """New weights make the folder's held-out metrics and reproducibility record stale: the
    export removes them, and the card then says neither was measured for these weights."""
    from mlb_core.train.card import METRICS, REPRO
    from mlb_core.train.command import train_and_export

    out = tmp_path / "weights"
    out.mkdir()
    for stale in (METRICS, REPRO):
        (out / stale).write_text("{}")
    from mlb_core.train.vision import RECIPES

    summary = train_and_export(out, seed=0, minutes=0.05, threads=1, recipe=RECIPES["structured"])
    assert summary["steps"]["regress"] >= 1 and (out / "vision.safetensors").exists()
    assert not (out / METRICS).exists() and not (out / REPRO).exists()
    from mlb_core.train.vision import sha256_file

    log = json.loads((out / "training_log.json").read_text())  # the hash is the exported file's, as --verify's
    assert log["vision_sha256"] == summary["vision_sha256"] == sha256_file(out / "vision.safetensors")
    assert log["checkpoint_vision_sha256"] and log["checkpoint_vision_sha256"] != log["vision_sha256"]
    assert log["vision_safetensors_bytes"] == (out / "vision.safetensors").stat().st_size
    card = (out / "MODEL_CARD.md").read_text()
    assert "was not repeated" in card and "Not measured yet" in card
    assert "structured (`mlb_core.train.tower_init`)" in card and "shape head" in card and "constant" in card
    assert summary["recipe"]["feature_layer"] == -1
    assert _codebook_in_projector(out), "structured builds on the first recipe: the codebook stays fixed"
    assert "the codebook stays fixed" in card
    assert '"vision_feature_layer": -1' in (out / "vision.json").read_text()  # the export carries the layer


def test_branched_training_repeats_itself_and_learns_otherwise(tmp_path):
    """A recipe with branched questions (long-branch, short layouts only to stay quick) repeats
    its weights from the same seed, and learns something else than one question a step."""
    from dataclasses import replace

    from mlb_core.backbones.embedded import ensure_embedded
    from mlb_core.train.vision import RECIPES, train_vision

    recipe = replace(RECIPES["long-branch"], p_long=0.0, outline_fit_frames=24)
    runs = [train_vision(tmp_path / name, seed=0, minutes_budget=0.1, threads=1,
                         source=ensure_embedded(trained=False), recipe=r)
            for name, r in (("a", recipe), ("b", recipe), ("one", replace(recipe, branches=1)))]
    assert runs[0]["recipe"]["branches"] == 4 and runs[0]["steps"]["finetune"] > 0
    assert runs[0]["vision_sha256"] == runs[1]["vision_sha256"]
    assert runs[0]["vision_sha256"] != runs[2]["vision_sha256"]
