"""The held-out sight check: judging rule, conditions, and one pass through the pipeline."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from mlb_core.cli import main
from mlb_core.errors import MLBError
from mlb_core.train import scenes
from mlb_core.train.sight import (
    SEED_OFFSET,
    SightCondition,
    binding_conditions,
    constant_share,
    default_conditions,
    first_word,
    format_judges,
    format_sight,
    grey_band_conditions,
    grey_conditions,
    length_conditions,
    length_curve_rows,
    measure_sight,
    one_frame_only,
    only_word,
    plot_length_curve,
    redrawn_conditions,
    segment_frames_for,
    sight_questions,
    sparse_conditions,
    strict_counts,
    write_sight,
)


def test_first_word_rule():
    colours = ("red", "green", "blue")
    assert first_word("In the video, the circle is Red, not blue.", colours) == "red"
    assert first_word("the object is bluegreen", colours) is None  # whole words only
    assert first_word("green or red", colours) == "green"  # hedges count as the first word


def test_strict_judge_asks_for_one_word_of_the_kind():
    shapes = scenes.SHAPES
    assert only_word("the red object is a square.", shapes) == "square"
    assert only_word("the red object is a square circle.", shapes) is None  # first_word says square
    assert first_word("the red object is a square circle.", shapes) == "square"
    assert only_word("Orange orange orange orange", scenes.COLOURS) == "orange"  # one word, repeated
    assert only_word("the object is bluegreen", ("blue", "green")) is None and only_word("", shapes) is None


def _saved(answers: list[tuple[str, str, str, bool]]) -> dict:
    rows = [{"clip": i, "kind": k, "question": "?", "truth": truth, "said": None, "answer": text, "right": right}
            for i, (k, truth, text, right) in enumerate(answers)]
    return {"conditions": {"single_full": {"method": "full", "n_frames": 1, "answers": rows}}}


def test_strict_counts_and_both_judges_from_saved_answers(tmp_path, capsys):
    result = _saved([("colour", "red", "the circle is red.", True),
                     ("colour", "blue", "blue or red", True),       # a hedge: right by the first word only
                     ("shape", "square", "a square circle", True),  # two shapes: right by the first word only
                     ("shape", "circle", "the red object is a circle.", True),
                     ("shape", "triangle", "a circle", False)])
    assert strict_counts(result["conditions"]["single_full"]["answers"]) == {"colour": (1, 2), "shape": (1, 3)}
    table = format_judges(result).splitlines()
    assert table[1].split()[3:] == ["2/2", "1/2", "2/3", "1/3"]
    path = tmp_path / "r.json"
    write_sight(result, path)
    assert main(["heldout", "--rescore", str(path)]) == 0
    assert "2/3" in capsys.readouterr().out


@pytest.mark.parametrize("content, words", [(None, "no such file"), ("{not json", "not a held-out result"),
                                            ('{"model": "x"}', "no 'conditions'")])
def test_rescore_refuses_what_is_not_a_result(tmp_path, capsys, content, words):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    assert main(["heldout", "--rescore", str(path)]) == 2
    assert words in capsys.readouterr().err


def test_rescore_needs_saved_answers_and_no_other_check(tmp_path, capsys):
    path = tmp_path / "r.json"
    write_sight({"conditions": {"single_full": {"method": "full", "n_frames": 1}}}, path)
    assert main(["heldout", "--rescore", str(path)]) == 2
    assert "keeps no answers" in capsys.readouterr().err
    assert main(["heldout", "--rescore", str(path), "--curve"]) == 2
    assert "runs no model" in capsys.readouterr().err


def test_default_conditions_cover_the_targets():
    names = {c.name: c for c in default_conditions()}
    assert {"single_full", "clip20_mlb", "clip20_full", "clip50_mlb", "clip50_full"} <= set(names)
    assert names["single_full"].n_frames == 1 and names["clip50_mlb"].preset == "mlb"
    assert all(c.n_clips >= 2 for c in default_conditions(0.01))


def test_length_curve_asks_the_same_clips_at_every_length(tmp_path):
    conds = length_conditions()
    full = [c.n_frames for c in conds if c.method == "full"]
    assert full == sorted(full) and max(full) * 576 <= 8192 and full[0] == 1
    assert max(c.n_frames for c in conds if c.method == "mlb") == 50
    assert len({c.clip_key for c in conds}) == 1 and len({c.n_clips for c in conds}) == 1
    result = measure_sight("tiny:llava_next", [SightCondition("a", 2, "full", "tiny", 2, 7),
                                               SightCondition("b", 3, "full", "tiny", 2, 7)],
                           workdir=tmp_path, progress=False)
    # one seed key: the same object at both lengths, so the same questions and truths
    assert (tmp_path / "a_0.mp4").exists() and (tmp_path / "b_1.mp4").exists()
    a, b = (scenes.sample_clip((scenes.HELDOUT_SEED_BASE + 7_000_000, 7, 0), f, "heldout", 1, 0.0) for f in (2, 3))
    assert a.objects[0].colour == b.objects[0].colour and a.background == b.background
    rows = length_curve_rows(result)
    assert {(r["condition"], r["kind"]) for r in rows} == {(c, k) for c in "ab" for k in ("colour", "shape")}
    for r in rows:
        assert r["n"] == 2 and 0 <= r["low"] <= r["accuracy"] <= r["high"] <= 1
        assert r["visual_tokens"] == result["conditions"][r["condition"]]["visual_tokens"] > 0
    assert result["conditions"]["b"]["visual_tokens"] > result["conditions"]["a"]["visual_tokens"]
    assert plot_length_curve(result, tmp_path / "curve.png").stat().st_size > 0
    with pytest.raises(MLBError, match="no condition"):
        plot_length_curve({"model": "m", "conditions": {}}, tmp_path / "none.png")


def test_every_curve_length_has_segments_that_tile_it():
    assert [segment_frames_for(n) for n in (1, 5, 8, 10, 14, 20, 50, 7)] == [1, 5, 4, 5, 2, 5, 5, 1]
    for cond in length_conditions() + default_conditions():
        assert cond.n_frames % segment_frames_for(cond.n_frames) == 0


def test_measure_sight_writes_each_condition_as_it_ends(tmp_path, monkeypatch):
    """A run stopped after its first condition keeps that condition's result on disk."""
    import mlb_core.pipeline as pipeline

    calls = {"n": 0}
    real = pipeline.encode_video

    def encode_then_stop(vlm, path, n_frames):
        calls["n"] += 1
        if calls["n"] > 2:  # the second condition's first clip
            raise KeyboardInterrupt
        return real(vlm, path, n_frames)

    monkeypatch.setattr(pipeline, "encode_video", encode_then_stop)
    out = tmp_path / "m.json"
    conds = [SightCondition("a", 1, "full", "tiny", 2), SightCondition("b", 2, "full", "tiny", 2)]
    with pytest.raises(KeyboardInterrupt):
        measure_sight("tiny:llava_next", conds, workdir=tmp_path, progress=False, out=out)
    kept = json.loads(out.read_text())
    assert kept["complete"] is False and list(kept["conditions"]) == ["a"] and kept["conditions"]["a"]["n"] == 4
    with pytest.raises(MLBError, match="n_frames"):  # a bad condition fails before any clip is made
        measure_sight("tiny:llava_next", [SightCondition("c", 3, "mlb", "tiny", 1), SightCondition("d", 0, "mlb",
                                                                                                   "tiny", 1)],
                      workdir=tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad" / "c_0.mp4").exists()


def test_measure_sight_through_the_pipeline_on_tiny(tmp_path):
    result = measure_sight("tiny:llava_next", [SightCondition("single_full", 1, "full", "tiny", 2)],
                           workdir=tmp_path, progress=False)
    r = result["conditions"]["single_full"]
    assert r["n"] == r["colour_n"] + r["shape_n"] == 4 and 0 <= r["accuracy"] <= 1
    assert "single_full" in format_sight(result) and "constant answer" in format_sight(result)
    assert r["colour_constant"] == constant_share(r["answers"], "colour")
    write_sight(result, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text())["conditions"]["single_full"]["n"] == 4


def test_paraphrased_questions_name_the_object_and_keep_the_truth():
    spec = scenes.sample_clip(3, 1, "heldout", 1, 0.0)
    obj = spec.objects[0]
    train = sight_questions(spec, 3)
    assert [(k, t, w) for k, _, t, w in train] == [("colour", obj.colour, "train"), ("shape", obj.shape, "train")]
    para = sight_questions(spec, 3, "paraphrase")
    assert len(para) == 8 and {q for _, q, _, _ in para}.isdisjoint({q for _, q, _, _ in train})
    for kind, question, truth, _ in para:
        assert "{" not in question and truth == (obj.colour if kind == "colour" else obj.shape)
        assert truth not in question.lower()  # never gives the answer away
    with pytest.raises(MLBError, match="questions"):
        sight_questions(spec, 3, "other")


def test_measure_sight_paraphrased_counts_each_wording(tmp_path):
    result = measure_sight("tiny:llava_next", [SightCondition("single_full", 1, "full", "tiny", 2)],
                           workdir=tmp_path, progress=False, questions="paraphrase")
    r = result["conditions"]["single_full"]
    assert result["questions"] == "paraphrase" and r["n"] == 16 and r["colour_n"] == r["shape_n"] == 8
    assert len(r["by_question"]) == 8 and all(v["n"] == 2 for v in r["by_question"].values())


@pytest.mark.parametrize("argv", [["heldout", "--scale", "0"], ["heldout", "--conditions", "single_ful"],
                                  ["heldout", "--curve", "--conditions", "single_full"],
                                  ["heldout", "--slots", "--min-cover", "0"],
                                  ["heldout", "--curve", "--redrawn"], ["heldout", "--slots", "--curve"],
                                  ["heldout", "--binding", "--redrawn"],
                                  ["heldout", "--binding", "--conditions", "single_full"],
                                  ["heldout", "--redrawn", "--conditions", "redrawn_css_full2"],
                                  ["heldout", "--redrawn-key", "3"], ["heldout", "--redrawn", "--redrawn-key", "-1"],
                                  ["train-vision", "--minutes", "0"], ["train-vision", "--threads", "0"]])
def test_bad_arguments_are_one_line_errors(argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.slow
def test_ideal_accuracy_runs_on_the_embedded_lm_and_checks_its_flags(capsys):
    """``mlb heldout --ideal``: the frozen LM's reading of ideal tokens (small, one layout each)."""
    from mlb_core.train import ceiling

    assert main(["heldout", "--ideal", "--ideal-scale", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --ideal-scale")
    result = ceiling.ideal_accuracy(n_clips=1)
    for r in result["layouts"].values():
        assert r["n"] == 1 and r["colour"] in (0.0, 1.0) and r["shape"] in (0.0, 1.0)
    assert "raw x1" in ceiling.format_ideal(result)
    with pytest.raises(MLBError, match="n_objects must be 1 or 2"):
        ceiling.ideal_accuracy(n_clips=1, n_objects=3)
    # two objects: each asked its colour and shape; a wrong answer may name the other object's
    two = ceiling.ideal_accuracy(n_clips=1, n_objects=2, shape_target="outline")
    assert (two["n_objects"], two["shape_target"]) == (2, "outline")
    for r in two["layouts"].values():
        assert r["n"] == 2
        for kind in ("colour", "shape"):
            assert r[kind] in (0.0, 0.5, 1.0) and r[f"{kind}_other"] in (0.0, 0.5, 1.0)
            assert r[kind] + r[f"{kind}_other"] <= 1.0
    assert "c other" in ceiling.format_ideal(two) and "on the outline" in ceiling.format_ideal(two)
    with pytest.raises(MLBError, match="tokens must be"):
        ceiling.ideal_accuracy(n_clips=1, tokens="pixels")
    # the tower's own tokens on the same clips: the drawn frames through the tower and the projector
    tower = ceiling.ideal_accuracy(n_clips=1, tokens="tower")
    assert tower["visual"] == "tower" and tower["codebook"] is None
    assert all(r["n"] == 1 for r in tower["layouts"].values())
    assert ceiling.format_ideal(tower).startswith("the tower's own tokens")
    # tower_tokens is the training's own path: the slot units times the codebook columns
    import torch.nn.functional as F

    from mlb_core.backbones.embedded import ensure_embedded
    from mlb_core.train.saturate import codebook_columns, saturate_slots
    from mlb_core.train.vision import N_SLOTS, load_checkpoint, pixel_values, slot_targets, slots

    model, _, processor = load_checkpoint(ensure_embedded(trained=True))
    spec, bank = scenes.sample_clip(3, 2, "heldout", 1, 0.0), scenes.VideoBank()
    frames, cover = scenes.render_clip(spec, bank)
    target = slot_targets(torch.from_numpy(cover), spec, "outline")  # (2, 24, 24, N_SLOTS)
    # the committed weights as they are, then with some slots saturated (stage 4, saturate.py)
    for paired in ([], [0, 3, 7, 9]):
        proj = model.model.multi_modal_projector
        saturate_slots(proj, torch.full((N_SLOTS,), 2.0), torch.full((N_SLOTS,), -0.3), paired, N_SLOTS, 4.0)
        book = codebook_columns(proj, N_SLOTS)  # (D, N_SLOTS), saturated or not
        with torch.no_grad():
            got = ceiling.tower_tokens(model, processor, spec, bank)  # (2, 24, 24, D)
            lin = proj.linear_2
            act = slots(model, pixel_values(frames, processor))  # (2, 24, 24, N_SLOTS)
            assert got.shape == (2, 24, 24, lin.out_features)
            torch.testing.assert_close(got, F.linear(act, book, lin.bias))
            # --ideal-swap: one slot group set to the training's targets, the others the tower's own
            for name, group in (("colour", slice(0, 6)), ("shape", slice(6, 9)), ("background", slice(9, 10))):
                mixed = act.clone()
                mixed[..., group] = target[..., group]
                swapped = ceiling.tower_tokens(model, processor, spec, bank, name, "outline")
                torch.testing.assert_close(swapped, F.linear(mixed, book, lin.bias))
                assert not torch.allclose(swapped, got)
            everything = ceiling.tower_tokens(model, processor, spec, bank, "all", "outline")
            torch.testing.assert_close(everything, F.linear(target, book, lin.bias))
            if not paired:  # --ideal-swap shape-pooled: the shape slots pointed at their object's average
                mixed = act.clone()
                mixed[..., 6:9] = ceiling.pool_shape_by_colour(act.reshape(2, -1, N_SLOTS)).reshape(2, 24, 24, 3)
                pooled = ceiling.tower_tokens(model, processor, spec, bank, "shape-pooled")
                torch.testing.assert_close(pooled, F.linear(mixed, book, lin.bias))
                # a diagnosis's own shape slots (a callable): the targets' give the "shape" swap
                def shape_targets(act_, target_, seen=(calls := [])):
                    seen.append((act_.shape, target_.shape))
                    return target_[..., 6:9]

                own = ceiling.tower_tokens(model, processor, spec, bank, shape_targets, "outline")
                torch.testing.assert_close(own, ceiling.tower_tokens(model, processor, spec, bank, "shape", "outline"))
                assert calls == [((2, 576, N_SLOTS), (2, 576, N_SLOTS))]
                assert ceiling.swap_name(shape_targets) == "shape_targets"
            else:
                with pytest.raises(MLBError, match="saturate"):
                    ceiling.tower_tokens(model, processor, spec, bank, "shape-pooled")
    for bad in ({"swap": "edges", "tokens": "tower"}, {"swap": "colour"}):
        with pytest.raises(MLBError, match="swap must be"):
            ceiling.ideal_accuracy(n_clips=1, **bad)
    swapped_run = ceiling.ideal_accuracy(n_clips=1, tokens="tower", swap="shape", shape_target="outline")
    assert swapped_run["swap"] == "shape" and "shape slots set to their targets" in ceiling.format_ideal(swapped_run)
    def sharpest(act_, target_):
        return torch.nn.functional.one_hot(act_[..., 6:9].argmax(-1), 3).to(act_.dtype)

    own_run = ceiling.ideal_accuracy(n_clips=1, tokens="tower", swap=sharpest, shape_target="outline")
    assert own_run["swap"] == "sharpest" and "shape slots given by sharpest" in ceiling.format_ideal(own_run)
    with pytest.raises(MLBError, match="swap must be"):
        ceiling.ideal_accuracy(n_clips=1, tokens="ideal", swap=sharpest)



@pytest.mark.slow
def test_continue_codebook_trains_the_joint_vectors_and_ideal_accuracy_reads_them(tmp_path):
    """``continue_codebook``: one step of the codebook stage from the committed codebook; the
    joint variant writes a ``joint`` tensor that moved from zero and that :class:`JointCodebook`
    loads back exactly; the plain variant writes the three base tensors only; bad arguments fail."""
    from safetensors.torch import load_file

    from mlb_core.backbones import vision_weights
    from mlb_core.backbones.embedded import ensure_embedded
    from mlb_core.train import ceiling
    from mlb_core.train.vision import load_checkpoint

    committed = vision_weights.WEIGHTS_DIR / "codebook.safetensors"
    with pytest.raises(MLBError, match="p_two_objects"):
        ceiling.continue_codebook(tmp_path / "x.safetensors", committed, p_two_objects=1.5)
    out = ceiling.continue_codebook(tmp_path / "joint.safetensors", committed, budget_s=0.1, joint=True)
    assert out["steps"] == 1 and out["joint"] is True
    state = load_file(str(tmp_path / "joint.safetensors"))
    assert set(state) == {"colour", "shape", "background", "joint"} and float(state["joint"].abs().max()) > 0
    model, tokenizer, _ = load_checkpoint(ensure_embedded(trained=True))
    book = ceiling.JointCodebook(model.get_input_embeddings(), tokenizer)
    book.load_state_dict(state)
    assert all(torch.equal(book.state_dict()[k], v) for k, v in state.items())
    read = ceiling.ideal_accuracy(n_clips=1, source=ensure_embedded(trained=True), scale=2.0,
                                  codebook=tmp_path / "joint.safetensors", shape_target="outline")
    assert read["codebook"] == "joint.safetensors" and all(r["n"] == 1 for r in read["layouts"].values())
    plain = ceiling.continue_codebook(tmp_path / "plain.safetensors", committed, budget_s=0.1)
    assert plain["steps"] == 1 and set(load_file(str(tmp_path / "plain.safetensors"))) == {"colour", "shape",
                                                                                          "background"}
    before = load_file(str(committed))
    assert not torch.equal(load_file(str(tmp_path / "plain.safetensors"))["colour"], before["colour"])


@pytest.mark.parametrize("roll", [0, 1])
def test_slot_accuracy_reads_the_true_slots_right_and_rolled_ones_wrong(monkeypatch, roll):
    """``mlb heldout --slots`` on an oracle tower (its slots are the training targets of the frame
    just drawn): every object read right; with the shape units rolled by one, every shape wrong and
    the confusion shows where each went. No model is loaded."""
    import torch

    from mlb_core.train import ceiling, scenes, vision

    drawn: list[tuple[np.ndarray, scenes.ClipSpec]] = []
    real_render = scenes.render_clip

    def render(spec, bank=None):
        frames, cover = real_render(spec, bank)
        drawn.append((cover, spec))
        return frames, cover

    def oracle(model, pixels):
        cover, spec = drawn[-1]
        target = vision.slot_targets(torch.from_numpy(cover), spec)  # (1, 24, 24, N_SLOTS)
        n = len(scenes.COLOURS)
        target[..., n:n + 3] = target[..., n:n + 3].roll(roll, dims=-1)
        return target

    monkeypatch.setattr(scenes, "render_clip", render)
    monkeypatch.setattr(vision, "load_checkpoint", lambda folder: (None, None, None))
    monkeypatch.setattr(vision, "pixel_values", lambda frames, processor: None)
    monkeypatch.setattr(vision, "slots", oracle)
    result = ceiling.slot_accuracy(n_clips=6, source="unused")
    assert result["n"] == 6 and result["colour"] == 1.0
    confusion = np.array(result["confusion_shape"])
    assert confusion.sum() == 6
    if roll == 0:
        assert result["shape"] == 1.0 and (confusion == np.diag(np.diag(confusion))).all()
    else:
        assert result["shape"] == 0.0
        for i, row in enumerate(confusion):  # truth i is read as shape i + 1
            assert row.sum() == row[(i + 1) % 3]
    assert "shape confusion" in ceiling.format_slots(result)


def test_default_min_cover_follows_the_weights_shape_target(tmp_path):
    """``mlb heldout --slots`` averages partly covered patches for outline-trained weights, whose
    shape lives on the outline, and mostly covered ones otherwise (or with no log)."""
    import json

    from mlb_core.train.ceiling import default_min_cover

    assert default_min_cover(tmp_path) == 0.5
    (tmp_path / "train_log.json").write_text(json.dumps({"summary": {"recipe": {"shape_target": "outline"}}}))
    assert default_min_cover(tmp_path) == 0.05
    (tmp_path / "training_log.json").write_text(json.dumps({"recipe": {"shape_target": "coverage"}}))
    assert default_min_cover(tmp_path) == 0.5  # the exported folder's log comes first
    (tmp_path / "training_log.json").write_text("{not json")
    with pytest.raises(MLBError, match="--min-cover"):
        default_min_cover(tmp_path)


def test_read_training_log_unwraps_both_logs_and_names_a_bad_one(tmp_path):
    """Every reader of a training log (the card, ``--verify``, ``--slots``' default) goes through
    :func:`read_training_log`: the exported log first, ``train_log.json``'s ``summary`` otherwise,
    a one-line error naming the file when it is not a JSON object."""
    import json

    from mlb_core.train.card import read_training_log

    assert read_training_log(tmp_path, required=False) is None
    with pytest.raises(MLBError, match="no training log .* nothing to verify"):
        read_training_log(tmp_path, hint="; nothing to verify")
    (tmp_path / "train_log.json").write_text(json.dumps({"summary": {"seed": 3}}))
    assert read_training_log(tmp_path) == {"seed": 3}
    (tmp_path / "training_log.json").write_text(json.dumps({"seed": 4}))
    assert read_training_log(tmp_path) == {"seed": 4}
    (tmp_path / "training_log.json").write_text(json.dumps([1, 2]))
    with pytest.raises(MLBError, match="training_log.json"):
        read_training_log(tmp_path)


def test_redrawn_conditions_ask_the_same_scenes_in_every_convention_and_method():
    from mlb_core.train.redrawn import CONVENTIONS

    conds = redrawn_conditions()
    assert {c.convention for c in conds} == set(CONVENTIONS) and len(conds) == 2 * len(CONVENTIONS)
    assert {(c.method, c.n_frames, c.preset) for c in conds} == {("full", 1, "cpu"), ("mlb", 20, "cpu")}
    assert len({c.clip_key for c in conds}) == 1 and {c.n_clips for c in conds} == {12}
    assert {c.n_clips for c in redrawn_conditions(0.1)} == {2}
    other = redrawn_conditions(key=901)  # other scenes, the same conditions
    assert {c.clip_key for c in other} == {901} and [c.name for c in other] == [c.name for c in conds]


def test_measure_sight_on_redrawn_clips_writes_each_scene_once(tmp_path):
    conds = [SightCondition("r1", 1, "full", "tiny", 2, 5, "css"), SightCondition("r2", 2, "full", "tiny", 2, 5, "css")]
    result = measure_sight("tiny:llava_next", conds, workdir=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["redrawn_css_5_0.mp4", "redrawn_css_5_1.mp4"]
    assert "redrawn" in result and result["conditions"]["r2"]["convention"] == "css"
    assert result["conditions"]["r1"]["n"] == 4 and result["conditions"]["r2"]["visual_tokens"] > 0
    for r in result["conditions"].values():  # every answer is kept, and they add up to the accuracies
        assert len(r["answers"]) == r["n"] and {a["clip"] for a in r["answers"]} == {0, 1}
        for kind in ("colour", "shape"):
            mine = [a for a in r["answers"] if a["kind"] == kind]
            assert len(mine) == r[f"{kind}_n"] and sum(a["right"] for a in mine) / len(mine) == r[f"{kind}_accuracy"]
            assert all(a["truth"] in (scenes.COLOURS if kind == "colour" else scenes.SHAPES) for a in mine)
            assert all(a["right"] == (a["said"] == a["truth"]) for a in mine)
    with pytest.raises(MLBError, match="convention"):  # before the model loads
        measure_sight("tiny:llava_next", [SightCondition("x", 1, "full", "tiny", 1, None, "crayon")],
                      workdir=tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_binding_conditions_ask_two_objects_and_count_the_other_ones_words(tmp_path, monkeypatch):
    """Two objects a clip, each asked its colour and its shape; an answer naming the other
    object's colour (shape) is counted as such. The answers are fixed ("a red circle") so that
    the counts can be checked against the clips' own objects."""
    import mlb_core.pipeline as pipeline

    conds = binding_conditions()
    assert [(c.method, c.n_frames, c.n_objects, c.n_clips) for c in conds] == [("full", 1, 2, 24), ("mlb", 20, 2, 8)]
    assert {c.n_clips for c in binding_conditions(0.01)} == {2}
    real = pipeline.answer

    def fixed(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), text="a red circle")

    monkeypatch.setattr(pipeline, "answer", fixed)
    cond = SightCondition("binding_full1", 1, "full", "tiny", 3, 300, n_objects=2)
    r = measure_sight("tiny:llava_next", [cond], workdir=tmp_path, progress=False)["conditions"]["binding_full1"]
    assert r["n"] == 3 * 4 and r["colour_n"] == r["shape_n"] == 6
    specs = [scenes.sample_clip((scenes.HELDOUT_SEED_BASE + SEED_OFFSET, 300, k), n_frames=1, split="heldout",
                                n_objects=2, p_partial=0.0) for k in range(3)]
    for kind, said in (("colour", "red"), ("shape", "circle")):
        values = [[getattr(o, kind) for o in spec.objects] for spec in specs]
        # each of a clip's two objects is asked once: "red" is right for one, the other object's for the other
        want_other = sum(said in v for v in values) / 6
        assert want_other > 0  # these seeds do draw a red object and circles
        assert r[f"{kind}_other_share"] == pytest.approx(want_other)
        assert r[f"{kind}_accuracy"] == pytest.approx(want_other)
        assert all(len(a["others"]) == 1 for a in r["answers"] if a["kind"] == kind)
    assert "colour: other object" in format_sight({"conditions": {"binding_full1": r}})
    for bad in (SightCondition("x", 1, "full", "tiny", 1, n_objects=3),
                SightCondition("y", 1, "full", "tiny", 1, None, "css", n_objects=2)):
        with pytest.raises(MLBError, match="n_objects"):  # before the model loads
            measure_sight("tiny:llava_next", [bad], workdir=tmp_path / "bad", progress=False)


def test_ideal_swap_reads_the_models_own_shape_target_and_needs_the_tower(monkeypatch, capsys):
    """``mlb heldout --ideal --ideal-tower --ideal-swap G``: the targets swapped in follow the
    committed weights' recipe (its training log's shape target), not the word codebook's default;
    without ``--ideal-tower`` the swap is a one-line error before any model loads."""
    from mlb_core.backbones import vision_weights
    from mlb_core.train import ceiling

    assert main(["heldout", "--ideal", "--ideal-swap", "colour"]) == 2
    assert capsys.readouterr().err.startswith("error: swap must be one of")
    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        return {"visual": "tower", "swap": kwargs["swap"], "n_clips": 2, "layouts": {}}

    monkeypatch.setattr(ceiling, "ideal_accuracy", fake)
    assert main(["heldout", "--ideal", "--ideal-tower", "--ideal-swap", "shape"]) == 0
    assert seen["tokens"] == "tower" and seen["swap"] == "shape"
    assert seen["shape_target"] == ceiling.recipe_shape_target(vision_weights.WEIGHTS_DIR) == "outline"
    assert "shape slots set to their targets" in capsys.readouterr().out
    assert main(["heldout", "--ideal", "--ideal-tower", "--ideal-swap", "shape-pooled"]) == 0
    assert seen["swap"] == "shape-pooled" and "shape slots pooled over its patches" in capsys.readouterr().out


def test_read_answer_and_layout_names():
    """``read_answer``: the best candidate, and whether a free answer would name it; the layouts
    ``--ideal-layouts`` takes by name, with one-line errors for the rest."""
    import torch

    from mlb_core.train import ceiling, layouts

    ids = {"red": 3, "blue": 5}
    logits = torch.tensor([0.0, 9.0, 0.0, 2.0, 0.0, 4.0])
    assert ceiling.read_answer(logits, ids) == ("blue", False)  # token 1 (" the") wins over any colour
    logits[1] = 1.0
    assert ceiling.read_answer(logits, ids) == ("blue", True)
    for name, tokens in (("raw1x8", 4608), ("bodytail3x50", 3400), ("pool12x2", 8)):
        layout = layouts.parse_layout(name)
        assert layout.name == name and layout.n_tokens == tokens
    for bad in ("raw2x1", "pool5x3", "bodytail3x0", "bodytail3x51", "tail3x2", "raw1x"):
        with pytest.raises(MLBError, match="not a layout"):
            layouts.parse_layout(bad)
    assert main(["heldout", "--ideal", "--ideal-layouts", "raw1x1,pool5x3"]) == 2  # before any model loads


def test_ideal_accuracy_reads_the_layouts_it_is_given():
    """``layout_names``: those layouts, keyed by name, each with the named shares."""
    from mlb_core.train import ceiling

    result = ceiling.ideal_accuracy(n_clips=1, layout_names=("pool12x2", "bodytail6x1"))
    assert list(result["layouts"]) == ["pool12x2", "bodytail6x1"]
    assert [r["tokens"] for r in result["layouts"].values()] == [8, 20]
    for r in result["layouts"].values():
        assert r["colour_named"] in (0.0, 1.0) and r["shape_named"] in (0.0, 1.0)
    assert "c named" in ceiling.format_ideal(result)


def test_constant_share_is_the_commonest_truth():
    """Against a plain count: 3 of 4 colour truths are blue (a constant "blue" scores 75%),
    the shapes are all different (25%), and a kind never asked has none."""
    answers = [{"kind": "colour", "truth": t} for t in ("blue", "red", "blue", "blue")]
    answers += [{"kind": "shape", "truth": t} for t in ("circle", "square", "triangle", "star")]
    assert constant_share(answers, "colour") == 0.75 and constant_share(answers, "shape") == 0.25
    assert constant_share(answers, "objects") is None


@pytest.mark.parametrize("flag", [[], ["--binding"], ["--curve"], ["--redrawn"], ["--sparse"], ["--grey"],
                                  ["--grey-band"]])
def test_heldout_conditions_keep_their_clips_when_others_are_left_out(monkeypatch, capsys, flag):
    """``mlb heldout --conditions B`` asks B's clips as the whole run does: the clip seed key is the
    condition's place in the whole list, not in the subset (it was, and a subset got other clips);
    each check's flag runs its own set of conditions."""
    from mlb_core.train import sight

    seen: list[list[SightCondition]] = []

    def fake(model, conditions, **kwargs):
        seen.append(conditions)
        return {"conditions": {}}

    monkeypatch.setattr(sight, "measure_sight", fake)
    assert main(["heldout", *flag, "-q"]) == 0
    whole = {c.name: c for c in seen[-1]}
    last = list(whole)[-1]
    assert main(["heldout", *flag, "-q", "--conditions", last]) == 0
    (kept,) = seen[-1]
    assert kept == whole[last] and kept.clip_key == (whole[last].clip_key if whole[last].clip_key is not None
                                                     else len(whole) - 1)
    sets = {"--binding": sight.binding_conditions, "--curve": sight.length_conditions,
            "--redrawn": sight.redrawn_conditions, "--sparse": sight.sparse_conditions,
            "--grey": sight.grey_conditions, "--grey-band": sight.grey_band_conditions}
    want = sets[flag[0]]() if flag else sight.default_conditions()
    assert [c.name for c in seen[0]] == [c.name for c in want]
    assert [c.clip_key for c in seen[0]] == [c.clip_key if c.clip_key is not None else i for i, c in enumerate(want)]


def test_sparse_conditions_show_the_object_in_one_frame_of_ten(tmp_path):
    """``mlb heldout --sparse``: the same 10-frame clips through full and mlb, clip k's object
    drawn in frame k mod 10 only (its coverage is zero in every other frame), every frame alike;
    nonsense is refused before the model loads."""
    conds = sparse_conditions()
    assert [(c.name, c.method, c.n_frames, c.n_clips, c.one_frame) for c in conds] == [
        ("sparse10_full", "full", 10, 20, True), ("sparse10_mlb", "mlb", 10, 20, True)]
    assert len({c.clip_key for c in conds}) == 1 and {c.n_clips for c in sparse_conditions(0.01)} == {2}
    spec = scenes.sample_clip((scenes.HELDOUT_SEED_BASE + SEED_OFFSET, 400, 3), n_frames=10, split="heldout",
                              n_objects=1, p_partial=0.0)
    shown = scenes.clip_coverage(one_frame_only(spec, 3)).reshape(10, -1).sum(axis=1)  # (T,)
    assert shown[3] > 0 and np.count_nonzero(shown) == 1
    assert one_frame_only(spec, 3).objects[0].colour == spec.objects[0].colour
    with pytest.raises(MLBError, match="outside"):
        one_frame_only(spec, 10)
    cond = SightCondition("s", 2, "full", "tiny", 2, 400, one_frame=True)
    r = measure_sight("tiny:llava_next", [cond], workdir=tmp_path, progress=False)["conditions"]["s"]
    assert r["one_frame"] and r["n"] == 4 and len(r["answers"]) == 4
    for bad in (SightCondition("x", 1, "full", "tiny", 1, one_frame=True),
                SightCondition("y", 2, "full", "tiny", 1, None, "css", one_frame=True)):
        with pytest.raises(MLBError, match="one_frame"):  # before the model loads
            measure_sight("tiny:llava_next", [bad], workdir=tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_grey_conditions_draw_achromatic_backgrounds(tmp_path):
    """``mlb heldout --grey``: one frame through full and one frame of ten through mlb, every clip
    on a grey background; a background kind that does not exist is refused before the model loads."""
    conds = grey_conditions()
    assert [(c.name, c.method, c.n_frames, c.n_clips, c.one_frame, c.background) for c in conds] == [
        ("grey1_full", "full", 1, 24, False, "grey"), ("grey10_mlb", "mlb", 10, 20, True, "grey")]
    cond = SightCondition("g", 2, "full", "tiny", 2, 500, one_frame=True, background="grey")
    r = measure_sight("tiny:llava_next", [cond], workdir=tmp_path, progress=False)["conditions"]["g"]
    assert r["background"] == "grey" and r["n"] == 4
    for k in range(2):  # the clips written are the grey ones
        spec = scenes.sample_clip((scenes.HELDOUT_SEED_BASE + SEED_OFFSET, 500, k), n_frames=2, split="heldout",
                                  n_objects=1, p_partial=0.0, background="grey")
        assert all(len(set(c)) == 1 for c in spec.bg_colours)
    for bad in (SightCondition("x", 1, "full", "tiny", 1, background="stripes"),
                SightCondition("y", 1, "full", "tiny", 1, None, "css", background="grey")):
        with pytest.raises(MLBError, match="background"):
            measure_sight("tiny:llava_next", [bad], workdir=tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_grey_band_conditions_cross_the_processors_mean(tmp_path, capsys):
    """``mlb heldout --grey-band``: one frame of ten on a grey gradient from 80-110 to 190-220
    (never drawn in training: no recipe's background kinds hold it), full and mlb on the same clips;
    two checks at once are refused by name."""
    conds = grey_band_conditions()
    assert [(c.name, c.method, c.n_clips, c.one_frame, c.background) for c in conds] == [
        ("greyband10_full", "full", 20, True, "grey-band"), ("greyband10_mlb", "mlb", 20, True, "grey-band")]
    assert "grey-band" not in scenes.BACKGROUND_KINDS and "grey-band" in scenes.HELDOUT_KINDS
    for k in range(30):
        spec = scenes.sample_clip((k, 600), n_frames=10, split="heldout", n_objects=1, p_partial=0.0,
                                  background="grey-band")
        (dark,) = set(spec.bg_colours[0])
        (light,) = set(spec.bg_colours[1])
        assert spec.background == "gradient" and 80 <= dark <= 110 and 190 <= light <= 220
    with pytest.raises(ValueError, match="backgrounds"):  # a held-out kind is never a training draw
        scenes.sample_clip(0, 1, backgrounds=("plain", "grey-band"))
    assert main(["heldout", "--grey", "--grey-band"]) == 2
    assert "--grey and --grey-band are different checks" in capsys.readouterr().err


def test_card_gives_both_judges_from_the_saved_answers():
    from mlb_core.train.card import heldout_section

    result = _saved([("colour", "red", "red", True), ("shape", "square", "a square circle", True),
                     ("shape", "circle", "a circle", True)])
    r = result["conditions"]["single_full"]
    r.update(preset="cpu", n=3, colour_accuracy=1.0, shape_accuracy=1.0, accuracy=1.0)
    section = heldout_section({**result, "heldout": "test clips", "judge": "first word"})
    row = next(line for line in section.splitlines() if line.startswith("| single_full"))
    assert row.split("|")[5:10] == [" 100% ", " 100% ", " 100% ", " 100% ", " 50% "]  # shape 2/2 first word, 1/2 strict
    assert "colour, strict | shape, strict" in section and "--rescore" in section


def _pool_shape_by_loop(act):
    """A plain-loop reference of ``ceiling.pool_shape_by_colour`` on one frame (P, 10)."""
    out = act[:, 6:9].clone()
    c, s = act[:, :6].clamp(min=0), act[:, 6:9].clamp(min=0)
    direction = []
    for k in range(6):
        pooled = sum(c[j, k] * s[j] for j in range(len(act)))
        direction.append(pooled / pooled.sum() if pooled.sum() > 0 else torch.zeros(3))
    for i in range(len(act)):
        if c[i].sum() <= 0:
            continue
        mixed = sum(c[i, k] / c[i].sum() * direction[k] for k in range(6))
        if mixed.sum() > 0:
            out[i] = s[i].sum() * mixed
    return out


def test_pool_shape_by_colour_matches_a_loop_and_keeps_each_patchs_mass():
    """``--ideal-swap shape-pooled``: the shape slots pooled over each colour's patches equal a
    plain loop, batched over frames; a patch with colour keeps its shape mass and takes its
    colour's direction; a patch with no colour keeps its own slots; every swap name is accepted."""
    from mlb_core.train import ceiling

    gen = torch.Generator().manual_seed(0)
    act = torch.randn(3, 40, 10, generator=gen)
    act[0, :5, :6] = -1.0  # colourless patches
    got = ceiling.pool_shape_by_colour(act)
    assert got.shape == (3, 40, 3)
    for t in range(3):
        torch.testing.assert_close(got[t], _pool_shape_by_loop(act[t]))
    torch.testing.assert_close(got[0, :5], act[0, :5, 6:9])
    # one red object whose patches disagree on shape: every red patch gets the object's average
    frame = torch.zeros(4, 10)
    frame[:3, 0] = 1.0  # red on patches 0-2
    frame[0, 6:9] = torch.tensor([2.0, 0.0, 0.0])
    frame[1, 6:9] = torch.tensor([0.0, 1.0, 0.0])
    frame[2, 6:9] = torch.tensor([1.0, 0.0, 0.0])
    frame[3, 9] = 1.0  # background
    pooled = ceiling.pool_shape_by_colour(frame)
    direction = torch.tensor([0.75, 0.25, 0.0])
    torch.testing.assert_close(pooled[:3], torch.stack([2 * direction, 1 * direction, 1 * direction]))
    torch.testing.assert_close(pooled[3], torch.zeros(3))
    assert "shape-pooled" in ceiling.SWAPS and set(ceiling.SWAPS) >= {"colour", "shape", "background", "all"}
