"""The training wing's pieces against plain references: token layouts (a per-cell loop), the
answer's key token, and the answer loss with its key-token weight (a per-position loop)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mlb_core.backbones.tiny import build_tiny_model
from mlb_core.train import layouts, scenes
from mlb_core.train.vision import answer_loss, lm_text


def _cells_loop(grid: torch.Tensor, cell: int) -> torch.Tensor:
    """Frame-major, then row-major over cells: the mean of each cell, one at a time."""
    t, h, w, _ = grid.shape
    return torch.stack([grid[f, r:r + cell, c:c + cell].reshape(-1, grid.shape[-1]).mean(0)
                        for f in range(t) for r in range(0, h, cell) for c in range(0, w, cell)])


@pytest.mark.parametrize("family, cell", [("raw", 1), ("pool", 3), ("pool", 12), ("bodytail", 2), ("bodytail", 6)])
def test_arrange_matches_a_cell_loop(family, cell):
    grid = torch.randn(3, 24, 24, 5)
    layout = layouts.Layout(family, cell, 3)
    got = layouts.arrange(grid, layout)
    want = _cells_loop(grid, cell)
    if family == "bodytail":  # body in time order, then every frame's 2 x 2 tail
        want = torch.cat([want, _cells_loop(grid, layouts.TAIL_CELL)])
    assert got.shape == (layout.n_tokens, 5)
    torch.testing.assert_close(got, want)


def test_sample_layout_respects_the_cap():
    rng = np.random.default_rng(0)
    for cap in (60, 300, 900, 3400):
        for _ in range(50):
            lay = layouts.sample_layout(rng, cap)
            assert lay.n_tokens <= cap or lay.n_frames == 1
            assert 1 <= lay.n_frames <= layouts.MAX_FRAMES


@pytest.mark.parametrize("lo, hi", [(2000, 4000), (1, 30), (3456, 3456), (5000, 20000)])
def test_sample_long_layout_against_every_layout(lo, hi):
    """Every draw is in range, and the draws reach every family and cell that has a layout in
    range (enumerated by a plain loop over all layouts), at its first and last frame count."""
    every = {(f, c, n) for f in layouts.FAMILIES for c in layouts.CELLS[f]
             for n in range(1, layouts.MAX_FRAMES + 1) if lo <= layouts.Layout(f, c, n).n_tokens <= hi}
    rng = np.random.default_rng(1)
    drawn = {(lay.family, lay.cell, lay.n_frames)
             for lay in (layouts.sample_long_layout(rng, lo, hi) for _ in range(3000))}
    assert drawn <= every
    assert {(f, c) for f, c, _ in drawn} == {(f, c) for f, c, _ in every}
    ends = {(f, c, min(n for g, d, n in every if (g, d) == (f, c))) for f, c, _ in every}
    ends |= {(f, c, max(n for g, d, n in every if (g, d) == (f, c))) for f, c, _ in every}
    assert ends <= drawn


def test_long_recipe_fields_are_checked():
    from mlb_core.train.vision import RECIPES, Recipe

    assert RECIPES["outline"].p_long == 0.0 and RECIPES["long"].p_long > 0
    assert RECIPES["committed"] == RECIPES["pooled"]  # the committed weights' recipe since 2026-12-06
    with pytest.raises(ValueError, match="p_long"):
        Recipe(p_long=1.0)
    with pytest.raises(ValueError, match="long_min_tokens"):
        Recipe(p_long=0.3, long_min_tokens=4000, long_max_tokens=2000)
    with pytest.raises(ValueError, match="long_min_tokens"):
        Recipe(p_long=0.3, long_min_tokens=576 * 51, long_max_tokens=576 * 60)


def test_lead_weight_recipe_is_checked_and_carded():
    import json
    from dataclasses import asdict

    from mlb_core.backbones import vision_weights
    from mlb_core.train.card import model_card
    from mlb_core.train.vision import RECIPES, Recipe

    assert RECIPES["learnt"].lead_weight == 0.0 and RECIPES["learnt-lead"].lead_weight == 1.0
    assert asdict(RECIPES["learnt-lead"]) == {**asdict(RECIPES["learnt"]), "lead_weight": 1.0}
    with pytest.raises(ValueError, match="lead_weight"):
        Recipe(lead_weight=-1.0)
    log = json.loads((vision_weights.WEIGHTS_DIR / "training_log.json").read_text())
    assert "+ 1.0 x the loss at the answer's word before it" in model_card(log)  # committed: pooled
    assert "word before it" not in model_card({**log, "recipe": asdict(RECIPES["learnt"])})


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_model("llava_next", prompt_family="smollm2")


def test_key_token_is_the_truth_word(tiny):
    spec = scenes.sample_clip(3, 1, "train", 1)
    for q in scenes.make_questions(spec, 0):
        text = lm_text(tiny.model, tiny.tokenizer, q)
        assert text.key is not None, q
        word = tiny.tokenizer.decode(text.answer[text.key:text.key + 1]).strip()
        assert q.truth.startswith(word) and word, (q, word)


def test_answer_loss_key_weight_against_a_loop(tiny):
    model = tiny.model
    spec = scenes.sample_clip(5, 1, "train", 1)
    q = scenes.make_questions(spec, 0, forms=("open",))[0]
    text = lm_text(model, tiny.tokenizer, q)
    visual = torch.randn(7, model.config.text_config.hidden_size)
    base, keyed = answer_loss(model, text, visual), answer_loss(model, text, visual, key_weight=2.0)
    # the reference: one forward per answer position, each predicting the next token
    emb = model.get_input_embeddings()
    ctx = torch.cat([text.prefix, visual, text.suffix])
    losses = []
    for i, tok in enumerate(text.answer.tolist()):
        x = torch.cat([ctx, emb(text.answer[:i])])[None]
        logits = model.lm_head(model.model.language_model(inputs_embeds=x).last_hidden_state[0, -1])
        losses.append(F.cross_entropy(logits[None].float(), torch.tensor([tok])))
    losses = torch.stack(losses)
    torch.testing.assert_close(base, losses.mean(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(keyed, losses.mean() + 2.0 * losses[text.key], rtol=1e-4, atol=1e-5)
    # lead_weight: the answer's token before the key (" a" before the shape word) weighted too
    assert text.key >= 1 and tiny.tokenizer.decode(text.answer[text.key - 1:text.key]).strip() in ("a", "is")
    led = answer_loss(model, text, visual, key_weight=2.0, lead_weight=0.5)
    torch.testing.assert_close(led, losses.mean() + 2.0 * losses[text.key] + 0.5 * losses[text.key - 1],
                               rtol=1e-4, atol=1e-5)


def test_installed_codebook_turns_slot_targets_into_ideal_tokens(tiny):
    """With the codebook in the projector's last layer, slot activations equal to the slot
    targets give exactly the codebook's ideal tokens, whatever the other hidden units hold."""
    from mlb_core.train.vision import N_SLOTS, Codebook, install_codebook, slot_targets

    model = build_tiny_model("llava_next", prompt_family="smollm2").model
    book = Codebook(model.get_input_embeddings(), tiny.tokenizer)
    with torch.no_grad():
        for p in book.parameters():
            p.add_(torch.randn_like(p))  # a trained codebook is no longer the word embeddings
    install_codebook(model, book)
    spec = scenes.sample_clip(11, 2, "train", 2, 0.0)
    cover = torch.from_numpy(scenes.clip_coverage(spec))  # (2, 2, 24, 24)
    target = slot_targets(cover, spec)  # (2, 24, 24, N_SLOTS)
    assert target.shape == (2, 24, 24, N_SLOTS)
    torch.testing.assert_close(target[..., :6].sum(-1) + target[..., -1], torch.ones(2, 24, 24))
    hidden = torch.randn(2, 24, 24, model.config.text_config.hidden_size)
    hidden[..., :N_SLOTS] = target
    got = model.model.multi_modal_projector.linear_2(hidden)
    with torch.no_grad():
        want = book(cover, spec)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_verify_training_compares_a_rerun_and_the_card_says_so(tmp_path):
    """``mlb train-vision --verify --verify-against``: same tensors are bit-identical, a changed
    tensor is reported with its largest difference, and the card's sentence follows the result."""
    import json

    import torch
    from safetensors.torch import save_file

    from mlb_core.cli import main
    from mlb_core.train.card import model_card
    from mlb_core.train.command import compare_weights

    weights = {"model.vision_tower.w": torch.arange(6.0).reshape(2, 3), "model.multi_modal_projector.b": torch.ones(3)}
    from mlb_core.backbones import vision_weights

    log = json.loads((vision_weights.WEIGHTS_DIR / "training_log.json").read_text())  # a real log: the card needs it
    log = log.get("summary", log) | {"minutes_budget": 1.5, "wall_s": {"total": 80.0}}
    folders = {}
    for name, delta in (("committed", 0.0), ("same", 0.0), ("other", 0.125)):
        f = tmp_path / name
        f.mkdir()
        state = {k: v + (delta if k.endswith(".b") else 0.0) for k, v in weights.items()}
        save_file(state, str(f / "vision.safetensors"))
        (f / "training_log.json").write_text(json.dumps(log))
        folders[name] = f
    assert compare_weights(folders["committed"] / "vision.safetensors", folders["same"] / "vision.safetensors")[
        "identical"]
    other = compare_weights(folders["committed"] / "vision.safetensors", folders["other"] / "vision.safetensors")
    assert not other["identical"] and other["max_abs_diff"] == 0.125
    save_file({"model.vision_tower.w": torch.zeros(3)}, str(tmp_path / "odd.safetensors"))
    assert compare_weights(folders["committed"] / "vision.safetensors", tmp_path / "odd.safetensors")[
        "max_abs_diff"] is None

    for against, word in (("same", "bit-identical"), ("other", "largest absolute difference 0.125")):
        assert main(["train-vision", "--out", str(folders["committed"]), "--verify",
                     "--verify-against", str(folders[against])]) == 0
        repro = json.loads((folders["committed"] / "reproducibility.json").read_text())
        assert repro["identical"] == (against == "same") and repro["wall_s"] == 80.0
        card = (folders["committed"] / "MODEL_CARD.md").read_text()
        assert "1.5-minute run was repeated" in card and word in card
    assert "was not repeated" in model_card.__globals__["repro_line"](log, None)
    assert main(["train-vision", "--out", str(folders["committed"]), "--verify", "--verify-against",
                 str(tmp_path / "nowhere")]) == 2  # a one-line error, nothing written over


def test_train_vision_refuses_an_unknown_recipe_before_training(tmp_path):
    from mlb_core.cli import main

    assert main(["train-vision", "--recipe", "nope", "--out", str(tmp_path / "w")]) == 2
    assert not (tmp_path / "w").exists()


def test_train_vision_refuses_cuda_where_there_is_none_before_training(tmp_path, monkeypatch):
    import torch

    from mlb_core.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train-vision", "--device", "cuda", "--out", str(tmp_path / "w")]) == 2
    for bad in ("gpu", "meta"):  # not a device, and not one training runs on
        assert main(["train-vision", "--device", bad, "--out", str(tmp_path / "w")]) == 2
    assert not (tmp_path / "w").exists()


def test_a_model_card_names_a_gpu_run_and_a_cpu_card_is_unchanged():
    """A CPU run's card and config carry no device (as before the option existed); a GPU run's say so."""
    import json

    from mlb_core.train.card import model_card

    folder = Path(__file__).resolve().parents[1] / "mlb_core" / "weights" / "embedded-vision"
    summary = json.loads((folder / "training_log.json").read_text())
    assert "device" not in summary and "stages 1-3 on" not in model_card(summary)
    assert "stages 1-3 on cuda (not a CPU run's bits)" in model_card({**summary, "device": "cuda"})


def test_a_log_from_before_a_recipe_field_means_the_code_from_before_it():
    """Training logs written before ``lr_codebook_finetune`` existed trained with the codebook
    fixed in stage 3: ``--verify`` must repeat that, not today's default."""
    from dataclasses import asdict

    from mlb_core.train.vision import RECIPES, Recipe, recipe_from_log

    old = {k: v for k, v in asdict(RECIPES["first"]).items() if k != "lr_codebook_finetune"}
    assert recipe_from_log(old) == RECIPES["first"] and recipe_from_log(old).lr_codebook_finetune == 0
    assert recipe_from_log(asdict(Recipe())) == Recipe() and Recipe().lr_codebook_finetune > 0


def test_outline_weight_and_outline_targets():
    """The outline weight is 1 on partly covered patches and 0 on whole or empty ones; with
    ``shape_target="outline"`` the shape slots and the codebook's shape vector follow it, the
    colour slots still follow the coverage."""
    from mlb_core.train.vision import Codebook, outline_weight, slot_targets

    c = torch.tensor([0.0, 0.05, 0.1, 0.5, 0.9, 1.0])
    torch.testing.assert_close(outline_weight(c), torch.tensor([0.0, 0.5278, 1.0, 1.0, 1.0, 0.0]), rtol=1e-3, atol=1e-3)
    spec = scenes.sample_clip(4, 1, "train", 1, 0.0)
    cover = torch.from_numpy(scenes.clip_coverage(spec))  # (1, 1, 24, 24)
    s = scenes.SHAPES.index(spec.objects[0].shape)
    whole, edge = cover[0, 0] == 1, (cover[0, 0] > 0.1) & (cover[0, 0] < 0.9)
    assert whole.any() and edge.any()
    out = slot_targets(cover, spec, "outline")[0]  # (24, 24, N_SLOTS)
    cov = slot_targets(cover, spec)[0]
    assert not out[whole][:, 6 + s].any() and (out[edge][:, 6 + s] == 1).all()
    torch.testing.assert_close(out[..., :6], cov[..., :6])
    model = build_tiny_model("llava_next", prompt_family="smollm2")
    book = Codebook(model.model.get_input_embeddings(), model.tokenizer)
    with torch.no_grad():
        ideal = book(cover, spec, "outline")[0]  # (24, 24, D)
        colour = book.colour[scenes.COLOURS.index(spec.objects[0].colour)]
    torch.testing.assert_close(ideal[whole], colour.expand(int(whole.sum()), -1))


@pytest.mark.parametrize("inverse", [False, True])
def test_slot_readout_is_what_the_slot_units_read(inverse: bool, edge_tower):
    """:func:`fit_slot_readout` on a tiny LLaVA-NeXT with a 336 px CLIP tower: after the fit,
    the projector's ten slot units are exactly GELU of the ridge read-out of the first layer's
    MLP units (a hand computation from the hooked activations): nothing else writes there. With
    ``inverse_gelu`` the read-out is the weighted ridge fit to ``GELU^-1`` of the targets (its
    background unit then sits near ``GELU^-1(1)`` on a plain background, not near 1)."""
    from mlb_core.train.vision import N_SLOTS, Recipe, fit_slot_readout, pixel_values, slots

    model, processor, tower, reserved = edge_tower
    assert len(reserved) >= N_SLOTS
    row = fit_slot_readout(model, processor, scenes.VideoBank(max_frames=8), reserved, 0,
                           Recipe(outline_fit_frames=12, shape_target="outline", tower_init="edges",
                                  inverse_gelu=inverse))
    assert row["frames"] == 12 and row["patches"] == 12 * 576 and 0 < row["r2"] <= 1
    assert 0 <= row["colour_accuracy"] <= 1 and 0 <= row["shape_accuracy"] <= 1
    layer = (tower.vision_model.encoder if hasattr(tower, "vision_model") else tower.encoder).layers[0]
    caught = {}
    hook = layer.mlp.fc1.register_forward_hook(lambda m, i, o: caught.__setitem__("h", layer.mlp.activation_fn(o)))
    frames, _ = scenes.render_clip(scenes.sample_clip(9, 2, "train", 1, 0.0, "gradient"))
    with torch.no_grad():
        got = slots(model, pixel_values(frames, processor))  # (2, 24, 24, N_SLOTS)
    hook.remove()
    fc2, dims = layer.mlp.fc2, reserved[:N_SLOTS]
    readout = caught["h"][:, 1:] @ fc2.weight[dims].T + fc2.bias[dims]  # (2, 576, N_SLOTS)
    torch.testing.assert_close(got.reshape(2, 576, N_SLOTS), F.gelu(readout), rtol=1e-4, atol=1e-5)
    background = float(readout[..., -1].median())  # most patches show only the background
    assert (1.05 < background < 1.3) if inverse else (0.85 < background < 1.05)  # GELU^-1(1) = 1.16


def test_recipe_without_tower_training_needs_a_fitted_readout_and_a_codebook_to_train():
    from mlb_core.train.vision import RECIPES, Recipe

    with pytest.raises(ValueError, match="train_tower"):
        Recipe(train_tower=False)  # a random tower would stay random
    with pytest.raises(ValueError, match="train_tower"):
        Recipe(train_tower=False, tower_init="edges", lr_codebook_finetune=0.0)
    assert not RECIPES["outline"].train_tower and RECIPES["outline"].regress_share == 0


def test_card_names_the_long_layouts_only_when_the_recipe_has_them():
    import json
    from dataclasses import asdict

    from mlb_core.backbones import vision_weights
    from mlb_core.train.card import model_card
    from mlb_core.train.vision import RECIPES

    log = json.loads((vision_weights.WEIGHTS_DIR / "training_log.json").read_text())
    for name, says, asks in (("outline", False, False), ("long", True, False), ("long-branch", True, True)):
        card = model_card({**log, "recipe": asdict(RECIPES[name])})
        assert ("30% of the steps instead draw a long layout of 2,000 to 4,000 tokens" in card) is says, name
        assert ("Every stage-3 step asks 4 different questions about its clip" in card) is asks, name


def test_branched_answer_loss_is_the_mean_of_separate_sequences(tiny):
    """Four questions in branches over one pass of the shared prefix + visual tokens give the
    loss and the visual tokens' gradient of four separate sequences (a plain loop), padding and
    different lengths included."""
    from mlb_core.train.branches import branch_tokens, branched_answer_loss, pick_questions

    model = tiny.model
    spec = scenes.sample_clip(7, 1, "train", 1)
    qs = pick_questions(np.random.default_rng(0), spec, 0.5, 4)
    texts = [lm_text(model, tiny.tokenizer, q) for q in qs]
    assert len({len(t.suffix) + len(t.answer) for t in texts}) > 1  # the padding is exercised
    base = torch.randn(9, model.config.text_config.hidden_size)
    vis_a, vis_b = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    got = branched_answer_loss(model, texts, vis_a, key_weight=1.5, lead_weight=0.7)
    got.backward()
    want = torch.stack([answer_loss(model, t, vis_b, key_weight=1.5, lead_weight=0.7) for t in texts]).mean()
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vis_a.grad, vis_b.grad, rtol=1e-4, atol=1e-6)
    assert branch_tokens(texts) == sum(len(t.suffix) + len(t.answer) for t in texts[1:])
    assert branch_tokens(texts[:1]) == 0


def test_pick_questions_draws_different_questions_with_the_forms_weights():
    from mlb_core.train.branches import pick_questions

    spec = scenes.sample_clip(7, 1, "train", 1)  # one object: three open questions, two multiple-choice
    rng = np.random.default_rng(0)
    for k in (1, 4, 9):
        qs = pick_questions(rng, spec, 0.25, k)
        assert len(qs) == min(k, 5) and len({(q.question, q.form) for q in qs}) == len(qs)
    assert {q.form for q in pick_questions(rng, spec, 0.0, 9)} == {"open"}
    assert {q.form for q in pick_questions(rng, spec, 1.0, 9)} == {"mc"}
    firsts = [pick_questions(rng, spec, 0.25, 1)[0].form for _ in range(2000)]
    assert abs(firsts.count("mc") / 2000 - 0.25) < 0.04  # one draw: multiple choice with p_mc
    with pytest.raises(ValueError, match="at least 1"):
        pick_questions(rng, spec, 0.25, 0)


def test_branches_field_is_checked_and_only_the_branch_recipe_has_it():
    from mlb_core.train.vision import RECIPES, Recipe

    with pytest.raises(ValueError, match="branches"):
        Recipe(branches=0)
    # long-branch and the recipes built on it; committed, the name of pooled's since 2026-12-06
    assert [n for n, r in RECIPES.items() if r.branches > 1] == ["long-branch", "long-sparse", "long-grey", "learnt",
                                                                 "learnt-lead", "lead-cosine", "lead-range",
                                                                 "range-readout", "pooled", "committed"]
    assert RECIPES["long-branch"] == replace(RECIPES["long-30"], branches=4)


@pytest.mark.slow
def test_branch_bench_refuses_nonsense_and_times_both_ways(capsys, embedded):
    from mlb_core.train import branches

    with pytest.raises(SystemExit):
        branches.main(["--tokens", "0"])
    assert "at least 1" in capsys.readouterr().err
    r = branches.bench(tokens=16, questions=3, threads=1)
    assert r["questions"] == 3 and r["branched_s"] > 0 and r["separate_s"] > 0
    assert r["grad_rel_diff"] < 1e-4


def test_span_field_is_checked_and_the_card_says_how_spans_are_drawn():
    """``long-sparse``: partial objects half the time, span length log-uniform; the other recipes
    keep the uniform draw (and so their bits); the card says which."""
    import json
    from dataclasses import asdict

    from mlb_core.backbones import vision_weights
    from mlb_core.train.card import model_card
    from mlb_core.train.vision import RECIPES, Recipe

    with pytest.raises(ValueError, match="span"):
        Recipe(span="gaussian")
    with pytest.raises(ValueError, match="p_partial"):
        Recipe(p_partial=1.5)
    assert RECIPES["long-sparse"] == replace(RECIPES["long-branch"], p_partial=0.5, span="loguniform")
    assert {n for n, r in RECIPES.items() if r.span != "uniform"} == {"long-sparse"}
    log = json.loads((vision_weights.WEIGHTS_DIR / "training_log.json").read_text())
    committed = model_card({**log, "recipe": asdict(RECIPES["long-branch"])})
    assert "on screen throughout (70%) or in a random span (30%)." in committed
    assert "its length log-uniform" not in committed
    sparse = model_card({**log, "recipe": asdict(RECIPES["long-sparse"])})
    assert "on screen throughout (50%) or in a random span (50%), its length log-uniform" in sparse


def test_loguniform_spans_against_their_formula_and_uniform_spans_unchanged():
    """``span="loguniform"``: a partial object's span length is floor(exp(U(0, log(n + 1)))), in
    1..n, one-frame spans common; ``uniform`` draws the same clips as before the option existed
    (a plain re-implementation of the old draw)."""
    import collections

    import numpy as np

    n, draws = 10, 3000
    lengths = collections.Counter()
    for seed in range(draws):
        obj = scenes.sample_clip(seed, n, "train", 1, 1.0, span="loguniform").objects[0]
        assert 0 <= obj.first < obj.last <= n
        lengths[obj.last - obj.first] += 1
    # P(length = k) = log((k + 1) / k) / log(n + 1); k = n takes the tail above n as well
    for k in (1, 2, 5):
        assert lengths[k] / draws == pytest.approx(np.log((k + 1) / k) / np.log(n + 1), abs=0.03), k
    assert lengths[1] > lengths[n // 2]
    with pytest.raises(ValueError, match="span"):
        scenes.sample_clip(0, n, span="normal")
    for seed in range(50):  # uniform: the same spans as the draw of every recipe before long-sparse
        spec = scenes.sample_clip(seed, n, "train", 1, 1.0)
        rng = np.random.default_rng(seed)
        rng.choice(scenes.COLOURS, size=1, replace=False), rng.choice(scenes.SHAPES, size=1, replace=False)
        radius = float(np.exp(rng.uniform(np.log(20.0), np.log(110.0))))
        rng.uniform(radius + 2, scenes.SIZE - radius - 2, size=4)  # centre and end
        rng.random()  # p_partial
        length = int(rng.integers(1, n + 1))
        first = int(rng.integers(0, n - length + 1))
        assert (spec.objects[0].first, spec.objects[0].last) == (first, first + length), seed


def test_grey_backgrounds_are_achromatic_and_only_long_grey_draws_them():
    """``greys``: a fourth background kind, a plain grey or a grey gradient (drawn as ``plain`` or
    ``gradient`` with equal channels), every grey far from every object colour; the default draw
    (three kinds) is the one of every other recipe; unknown kinds are refused."""
    import numpy as np

    kinds = collections_counter(
        scenes.sample_clip(i, 1, "train", 1, 0.0, backgrounds=scenes.BACKGROUND_KINDS) for i in range(400))
    greys = kinds["plain", True] + kinds["gradient", True]
    assert 70 < greys < 130 and kinds["video", False] > 70  # about a quarter each
    assert collections_counter(scenes.sample_clip(i, 1, "train", 1, 0.0) for i in range(400))["plain", True] < 10
    for i in range(40):
        spec = scenes.sample_clip(i, 2, "heldout", 1, 0.0, background="grey")
        assert spec.background in ("plain", "gradient") and all(len(set(c)) == 1 for c in spec.bg_colours)
        frames, _ = scenes.render_clip(spec)
        bg = frames[0][:4, :4].reshape(-1, 3).astype(int)  # a corner: the object keeps 2 px off the edge
        assert (bg.max(1) - bg.min(1) <= 2).all()
    for colour in scenes.PALETTE.values():
        assert min(np.linalg.norm(np.array(colour) - g) for g in range(256)) >= scenes.MIN_BG_DISTANCE
    with pytest.raises(ValueError, match="backgrounds"):
        scenes.sample_clip(0, 1, backgrounds=("plain", "stripes"))
    with pytest.raises(ValueError, match="backgrounds"):
        scenes.sample_clip(0, 1, background="stripes")
    from mlb_core.train.vision import RECIPES

    assert {n for n, r in RECIPES.items() if r.greys} == {"long-grey"}
    assert RECIPES["long-grey"] == replace(RECIPES["long-branch"], greys=True)
    import json
    from dataclasses import asdict

    from mlb_core.backbones import vision_weights
    from mlb_core.train.card import model_card

    log = json.loads((vision_weights.WEIGHTS_DIR / "training_log.json").read_text())
    assert "are held out), one third each." in model_card({**log, "recipe": asdict(RECIPES["long-branch"])})
    assert "or an achromatic one" in model_card({**log, "recipe": asdict(RECIPES["long-grey"])})


def collections_counter(specs) -> dict:
    """(background kind, achromatic?) -> clips, from ``specs``."""
    import collections

    return collections.Counter((s.background, bool(s.bg_colours) and all(len(set(c)) == 1 for c in s.bg_colours))
                               for s in specs)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_codebook_schedule_against_its_formula(tiny, schedule):
    """Stage 1's codebook learning rate: constant (every recipe before ``lead-cosine``) or 20
    warm-up steps then a cosine decay to 0 over the stage's planned budget, step by step against
    :func:`lr_factor` and the cost model; the loss curve averages runs of 25 steps."""
    import math

    from mlb_core.train.vision import RECIPES, Codebook, lm_cost, lr_factor, stage_codebook, window_means

    recipe = replace(RECIPES["lead-cosine"], codebook_schedule=schedule)
    book = Codebook(tiny.model.get_input_embeddings(), tiny.tokenizer)
    log: list[dict] = []
    budget = 60.0
    stage_codebook(tiny.model, tiny.tokenizer, book, budget, 0, recipe, 2, log)
    assert len(log) > 30
    spent = 0.0
    for step, row in enumerate(log):
        want = recipe.lr_codebook * (lr_factor(step, spent / budget, "cosine") if schedule == "cosine" else 1.0)
        assert math.isclose(row["lr"], want, rel_tol=1e-12), (step, row["lr"], want)
        spent += lm_cost(row["tokens"], recipe, 2)
    if schedule == "cosine":
        assert log[0]["lr"] == recipe.lr_codebook / 20 and log[-1]["lr"] < 0.05 * recipe.lr_codebook
    curve = window_means(log, "codebook", "loss")
    assert len(curve) == math.ceil(len(log) / 25)
    assert curve[0] == pytest.approx(np.mean([r["loss"] for r in log[:25]]), abs=1e-4)


def test_lr_factor_and_the_schedule_fields():
    from mlb_core.train.vision import RECIPES, Recipe, lr_factor

    assert [lr_factor(s, 0.0, "constant") for s in (0, 9, 19, 500)] == [0.05, 0.5, 1.0, 1.0]
    assert lr_factor(30, 0.5, "cosine") == pytest.approx(0.5) and lr_factor(30, 1.0, "cosine") == pytest.approx(0.0)
    with pytest.raises(ValueError, match="codebook_schedule"):
        Recipe(codebook_schedule="linear")
    with pytest.raises(ValueError, match="regress_schedule"):
        Recipe(regress_schedule="step")
    scheduled = [name for name, r in RECIPES.items() if r.codebook_schedule != "constant"]
    # committed: pooled's name since 2026-12-06
    assert scheduled == ["lead-cosine", "lead-range", "range-readout", "pooled", "committed"]
    assert asdict_of("lead-cosine") == {**asdict_of("learnt-lead"), "codebook_schedule": "cosine"}


def asdict_of(name: str) -> dict:
    from dataclasses import asdict

    from mlb_core.train.vision import RECIPES

    return asdict(RECIPES[name])


def test_card_names_the_codebook_schedule_and_the_loss_curves_only_when_there_are_some():
    import json
    from dataclasses import asdict

    from mlb_core.backbones import vision_weights
    from mlb_core.train.card import model_card
    from mlb_core.train.vision import RECIPES

    log = json.loads((vision_weights.WEIGHTS_DIR / "training_log.json").read_text())  # committed: pooled
    plain = model_card({k: v for k, v in log.items() if k != "loss_curve"} | {"recipe": asdict(RECIPES["learnt"])})
    assert "cosine decay to 0 over the stage's planned budget" not in plain and "Loss curves" not in plain
    assert "Loss curves" in model_card(log)
    card = model_card({**log, "loss_curve": {"codebook": [6.5, 2.0], "finetune_lm": [3.1, 2.4]}})
    assert card.count("20 warm-up steps, then a cosine decay to 0 over the stage's planned budget") == 2
    assert "Loss curves (means of 25 consecutive steps): stage 1 6.50, 2.00; stage 3 3.10, 2.40." in card


def test_soft_mask_against_a_plain_supersampling_loop():
    """``scenes.soft_mask``: each pixel's share is the mean of SOFT x SOFT point samples of the
    shape (the same inequalities as ``shape_mask``), checked against a loop over sub-pixel points;
    away from the edge it is 0 or 1, and its sum is about the shape's area."""
    import numpy as np

    from mlb_core.evaluation.synthetic import shape_mask

    s = 3
    cases = (("circle", (100, 60), 23.5), ("triangle", (40, 300), 31.0), ("square", (170, 170), 12.0))
    for shape, centre, radius in cases:
        soft = scenes.soft_mask(shape, centre, radius, soft=s)
        for x, y in ((centre[0], centre[1]), (centre[0] + 5, centre[1] - 7), (int(centre[0] + radius), centre[1]),
                     (centre[0], int(centre[1] + radius)), (centre[0] - 200, centre[1])):
            if not (0 <= x < scenes.SIZE and 0 <= y < scenes.SIZE):
                continue
            hits = 0
            for j in range(s):
                for i in range(s):  # the point sample's offset from the shape's centre
                    px, py = x + (i + 0.5) / s - 0.5 - centre[0], y + (j + 0.5) / s - 0.5 - centre[1]
                    if shape == "circle":
                        hits += px * px + py * py <= radius * radius
                    elif shape == "square":
                        hits += abs(px) <= radius * 0.85 and abs(py) <= radius * 0.85
                    else:
                        frac = (py + radius) / max(1, 2 * radius)
                        hits += -radius <= py <= radius and abs(px) <= frac * radius
            assert soft[y, x] == pytest.approx(hits / s / s, abs=1e-6), (shape, x, y)
        hard = shape_mask(shape, centre, radius, (scenes.SIZE, scenes.SIZE))
        assert abs(soft.sum() - hard.sum()) < 0.05 * hard.sum() + 4 * radius
        assert 0 < ((soft > 0) & (soft < 1)).sum() < (hard ^ np.roll(hard, 1, 0)).sum() * 3


def test_vary_drawing_keeps_names_and_questions_and_the_default_draw_is_unchanged():
    """``vary_drawing``: the same objects, names and questions, anti-aliased, in a colour of the
    name's range whose hue is nearer its own palette hue than any other's; coverage from the soft
    shares; older recipes never call it (``p_varied`` 0) so their clips keep their bits."""
    import colorsys

    import numpy as np

    from mlb_core.train.vision import RECIPES, Recipe, _sample_spec

    hues = {c: colorsys.rgb_to_hsv(*(v / 255 for v in rgb))[0] for c, rgb in scenes.PALETTE.items()}
    for seed in range(60):
        spec = scenes.sample_clip(seed, 2, "train", None, 0.0, backgrounds=("plain", "gradient"))
        varied = scenes.vary_drawing(spec, seed)
        assert varied.soft and not spec.soft
        look = [(o.colour, o.shape, o.radius, o.centre) for o in spec.objects]
        assert [(o.colour, o.shape, o.radius, o.centre) for o in varied.objects] == look
        assert scenes.make_questions(varied, 1) == scenes.make_questions(spec, 1)
        for obj in varied.objects:
            h, sat, val = colorsys.rgb_to_hsv(*(v / 255 for v in obj.drawn_rgb))
            nearest = min(hues, key=lambda c: min(abs(h - hues[c]), 1 - abs(h - hues[c])))
            assert nearest == obj.colour and sat >= 0.59 and val >= 0.49, (seed, obj)
            far = [np.linalg.norm(np.subtract(obj.drawn_rgb, b)) >= scenes.MIN_BG_DISTANCE / 2 for b in spec.bg_colours]
            assert all(far) or obj.rgb == scenes.PALETTE[obj.colour]
        frames, cover = scenes.render_clip(varied)
        assert np.allclose(cover, scenes.clip_coverage(varied), atol=1e-6)
        hard_cover = scenes.clip_coverage(spec)
        assert abs(cover.sum() - hard_cover.sum()) <= 0.05 * hard_cover.sum() + 1.0
    assert scenes.vary_drawing(spec, 3) == scenes.vary_drawing(spec, 3) != scenes.vary_drawing(spec, 4)
    with pytest.raises(ValueError, match="p_varied"):
        Recipe(p_varied=1.5)
    with pytest.raises(ValueError, match="colour"):
        scenes.colour_range("pink")
    assert {n for n, r in RECIPES.items() if r.p_varied} == {"lead-range", "range-readout"}
    assert RECIPES["lead-range"] == replace(RECIPES["lead-cosine"], p_varied=0.5)
    assert RECIPES["range-readout"] == replace(RECIPES["lead-range"], varied_in="readout")
    # p_varied = 0 draws nothing more: the committed recipe's clips are sample_clip's, as before
    committed = RECIPES["committed"]
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(20):  # the body of _sample_spec before p_varied, written out
        n_objects = 2 if b.random() < committed.p_two_objects else 1
        before = scenes.sample_clip(int(b.integers(1 << 31)), 3, "train", n_objects, committed.p_partial,
                                    span=committed.span, backgrounds=scenes.BACKGROUNDS)
        assert _sample_spec(a, 3, committed) == before
    drawn = [_sample_spec(np.random.default_rng(i), 1, RECIPES["lead-range"]) for i in range(200)]
    assert 70 < sum(s.soft for s in drawn) < 130


def test_card_says_how_clips_are_drawn_only_for_the_varied_recipe():
    import json
    from dataclasses import asdict

    from mlb_core.backbones import vision_weights
    from mlb_core.train.card import model_card
    from mlb_core.train.vision import RECIPES

    log = json.loads((vision_weights.WEIGHTS_DIR / "training_log.json").read_text())
    assert "drawn another way" not in model_card({**log, "recipe": asdict(RECIPES["lead-cosine"])})
    assert "50% of the clips are drawn another way" in model_card({**log, "recipe": asdict(RECIPES["lead-range"])})
    assert "50% of the frames the slot read-out is fitted on" in model_card(
        {**log, "recipe": asdict(RECIPES["range-readout"])})


def test_varied_in_readout_keeps_the_lm_stages_on_lead_cosine_clips():
    """``varied_in="readout"``: the LM stages draw lead-cosine's clips bit for bit (no extra draw
    from the generator), while the read-out's fit draws about half its frames another way."""
    import numpy as np

    from mlb_core.train.vision import RECIPES, Recipe, _sample_spec

    with pytest.raises(ValueError, match="varied_in"):
        Recipe(varied_in="codebook")
    base, ours = RECIPES["lead-cosine"], RECIPES["range-readout"]
    a, b = np.random.default_rng(11), np.random.default_rng(11)
    for n_frames in (1, 3, 1, 5) * 5:
        assert _sample_spec(a, n_frames, ours) == _sample_spec(b, n_frames, base)
        assert _sample_spec(a, n_frames, ours, "lm") == _sample_spec(b, n_frames, base, "readout")
    assert a.random() == b.random()  # the two streams are still in step
    fitted = [_sample_spec(np.random.default_rng(i), 1, ours, "readout") for i in range(200)]
    assert 70 < sum(s.soft for s in fitted) < 130
    everywhere = [_sample_spec(np.random.default_rng(i), 1, RECIPES["lead-range"]) for i in range(200)]
    assert [s.soft for s in everywhere] == [s.soft for s in fitted]  # the same draw, where it is drawn
