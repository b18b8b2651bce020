"""Does the trained embedded default see? Held-out accuracy measured through the real pipeline.

Held-out scenes (:mod:`mlb_core.train.scenes`, split ``heldout``: seeds never used in
training and backgrounds from clips never used in training) are written as H.264 files,
decoded, encoded by the checkpoint's own image processor and vision tower, compressed by a
method of :mod:`mlb_core.methods` and answered by the frozen LM, exactly as ``mlb answer``
does. An answer is right when its first colour (or shape) word is the truth (the offline
keyword judge of the probe); :func:`strict_counts` re-reads the saved answers by a strict judge
that also asks for no other colour (shape) word (``mlb heldout --rescore``).

Conditions (every clip shows one object on screen throughout; the question asks its colour or
its shape, open-ended):

- ``single_full``: one frame, no compression (576 raw tokens);
- ``clip20_full`` / ``clip20_mlb``: 20-frame clips through ``full`` (as many raw frames as fit
  the 8192-token context: 14) and ``mlb`` (1360 tokens at the ``cpu`` preset);
- ``clip50_full`` / ``clip50_mlb``: 50-frame clips (``full``: 14 of 50 frames; ``mlb``: 3400
  tokens at the ``mlb`` preset).

The length curve (:func:`length_conditions`, ``mlb heldout --curve``) asks the same clips at
every length: ``full`` on 1, 2, 4, 8 and 14 frames (576 to 8064 raw tokens) and ``mlb`` on 5,
10, 20 and 50 frames (340 to 3400 tokens), so that accuracy can be read against the number of
visual tokens where a 20- or 50-frame target is out of reach (:func:`plot_length_curve`).

Two objects at once (:func:`binding_conditions`, ``mlb heldout --binding``): clips with two
objects of different colours and shapes, each asked about (``What colour is the circle ...``), so
that an answer can name the *other* object's colour or shape: does the model bind a colour to
its shape, or name a colour it sees?

An object in one frame (:func:`sparse_conditions`, ``mlb heldout --sparse``): 10-frame clips
whose object shows in one frame only, through ``full`` and ``mlb``: probe v2's task without its
distractors or its design, for any method alike.

On grey (:func:`grey_conditions`, ``mlb heldout --grey``): achromatic backgrounds, one frame
through ``full`` and the object in one frame of ten through ``mlb``; on a grey band
(:func:`grey_band_conditions`, ``--grey-band``): one frame of ten on a grey gradient that crosses
the image processor's mean, through ``full`` and ``mlb``.

Drawn another way (:func:`redrawn_conditions`, ``mlb heldout --redrawn``): the same words on
clips that share no drawing code with the training (:mod:`mlb_core.train.redrawn`: PIL,
anti-aliased, 640 x 480, other colour conventions, libx264 at CRF 23), through ``full`` on one
frame and ``mlb`` at ``mlb answer``'s default (20 frames, ``cpu`` preset).

``mlb heldout`` prints the table and writes it as JSON (the committed
``mlb_core/weights/embedded-vision/heldout_metrics.json``).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mlb_core.config import segment_frames_for
from mlb_core.errors import MLBError
from mlb_core.train import scenes

SEED_OFFSET = 7_000_000  # on top of scenes.HELDOUT_SEED_BASE: seeds of this check only

# Wordings the training never uses (it asks "What colour is the {shape} in the video?" and "What
# shape is the {colour} object in the video?"): ``--questions paraphrase`` asks these instead, to
# show how far the held-out numbers depend on the training's own phrasing.
PARAPHRASES: dict[str, tuple[str, ...]] = {
    "colour": ("What color is the {shape}?", "What is the colour of the object in this video?",
               "Which colour does the {shape} have?", "What color is the shape in the video?"),
    "shape": ("What shape is the object?", "What is the shape of the {colour} thing in this video?",
              "Which geometric shape is shown in the video?", "What shape is in the video?"),
}  # the fourth of each kind added 2026-12-06, after "the shape" drew shape answers to colour questions
QUESTION_SETS = ("train", "paraphrase")


def _check_questions(questions: str) -> None:
    if questions not in QUESTION_SETS:
        raise MLBError(f"questions must be one of {', '.join(QUESTION_SETS)}, got {questions!r}")


def sight_questions(spec: scenes.ClipSpec, seed: Any, questions: str = "train") -> list[tuple[str, str, str, str]]:
    """``(kind, question, truth, wording)`` for the clip's one object: its colour and its shape,
    in the training's wording (``train``; ``wording`` is ``"train"``) or in every wording of
    :data:`PARAPHRASES` (``paraphrase``; ``wording`` is the template)."""
    _check_questions(questions)
    if questions == "train":
        return [(q.kind, q.question, q.truth, "train") for q in scenes.make_questions(spec, seed, forms=("open",))
                if q.kind in ("colour", "shape")]
    obj = spec.objects[0]
    return [(kind, t.format(shape=obj.shape, colour=obj.colour), obj.colour if kind == "colour" else obj.shape, t)
            for kind, templates in PARAPHRASES.items() for t in templates]


@dataclass(frozen=True)
class SightCondition:
    """One held-out condition: clips of ``n_frames`` frames answered by ``method`` at ``preset``."""

    name: str
    n_frames: int
    method: str
    preset: str
    n_clips: int
    clip_key: int | None = None  # the clips' seed key; None: the condition's index (other clips per condition)
    convention: str | None = None  # None: scenes' clips; a redrawn.CONVENTIONS name: clips drawn another way
    n_objects: int = 1  # objects per clip (scenes' clips: 1 or 2), each asked its colour and its shape
    one_frame: bool = False  # the object on screen in one frame only: clip k's frame k mod n_frames
    background: str | None = None  # scenes' clips: force this background kind (scenes.BACKGROUND_KINDS)


def default_conditions(scale: float = 1.0) -> list[SightCondition]:
    """The standard set; ``scale`` multiplies the clip counts (at least 2 each)."""
    def n(k: int) -> int:
        return max(2, int(round(k * scale)))

    return [SightCondition("single_full", 1, "full", "cpu", n(24)),
            SightCondition("clip20_mlb", 20, "mlb", "cpu", n(8)),
            SightCondition("clip20_full", 20, "full", "cpu", n(4)),
            SightCondition("clip50_mlb", 50, "mlb", "mlb", n(6)),
            SightCondition("clip50_full", 50, "full", "mlb", n(3))]


CURVE_FULL_FRAMES = (1, 2, 4, 8, 14)  # 14 x 576 = 8064 raw tokens: the most the 8192-token context holds
CURVE_MLB_FRAMES = (5, 10, 20, 50)
CURVE_KEY = 100  # one seed key for every length: the same objects at every length (paired)


def length_conditions(scale: float = 1.0) -> list[SightCondition]:
    """The length curve: the same held-out clips (one object on screen throughout) through ``full``
    at 1-14 frames and ``mlb`` (``mlb`` preset) at 5-50 frames; 8 clips per point times ``scale``.
    A clip's object, size and path are the same at every length (its background draw is too,
    for two frames or more)."""
    n = max(2, int(round(8 * scale)))
    return ([SightCondition(f"curve_full_{f}", f, "full", "cpu", n, CURVE_KEY) for f in CURVE_FULL_FRAMES]
            + [SightCondition(f"curve_mlb_{f}", f, "mlb", "mlb", n, CURVE_KEY) for f in CURVE_MLB_FRAMES])


BINDING_KEY = 300  # one seed key for the two-object conditions


def binding_conditions(scale: float = 1.0) -> list[SightCondition]:
    """Two objects in every clip (different colours and shapes, on screen throughout), each asked
    its colour and its shape: ``full`` on one frame (24 clips times ``scale``) and ``mlb`` at the
    ``cpu`` preset on 20 frames (8 clips times ``scale``)."""
    def n(k: int) -> int:
        return max(2, int(round(k * scale)))

    return [SightCondition("binding_full1", 1, "full", "cpu", n(24), BINDING_KEY, n_objects=2),
            SightCondition("binding_mlb20", 20, "mlb", "cpu", n(8), BINDING_KEY, n_objects=2)]


SPARSE_KEY = 400  # one seed key for the one-frame conditions: the same clips for both methods


def sparse_conditions(scale: float = 1.0) -> list[SightCondition]:
    """An object in one frame of ten (``mlb heldout --sparse``): 10-frame clips whose one object
    is on screen in frame ``k mod 10`` of clip ``k`` only (every frame the same number of times),
    the other nine frames showing the background alone; ``full`` (5760 raw tokens) and ``mlb``
    (``cpu`` preset) on the same clips. Method-neutral: no distractors and every frame alike, the
    sight that probe v2 needs before its methods can differ (docs/training-record.md, "An object in one frame")."""
    n = max(2, int(round(20 * scale)))
    return [SightCondition(f"sparse10_{method}", 10, method, "cpu", n, SPARSE_KEY, one_frame=True)
            for method in ("full", "mlb")]


GREY_KEY = 500  # one seed key for the grey-background conditions


def grey_conditions(scale: float = 1.0) -> list[SightCondition]:
    """Achromatic backgrounds (``mlb heldout --grey``): a plain grey or a grey gradient, levels
    0-255 (:data:`mlb_core.train.scenes.BACKGROUND_KINDS`' ``grey``), behind the object: one frame
    through ``full`` (24 clips) and the object in one frame of ten through ``mlb`` (20 clips).
    Greys near the image processor's mean are where the tower's read-out is weakest (docs/training-record.md,
    "An object in one frame"); probe v2 draws its clips on a grey gradient."""
    def n(k: int) -> int:
        return max(2, int(round(k * scale)))

    return [SightCondition("grey1_full", 1, "full", "cpu", n(24), GREY_KEY, background="grey"),
            SightCondition("grey10_mlb", 10, "mlb", "cpu", n(20), GREY_KEY + 1, one_frame=True, background="grey")]


GREY_BAND_KEY = 600  # one seed key for the grey-band conditions: the same clips for both methods


def grey_band_conditions(scale: float = 1.0) -> list[SightCondition]:
    """An object in one frame of ten on a grey gradient that crosses the image processor's mean
    (``mlb heldout --grey-band``: dark end 80-110, light end 190-220, a random angle;
    :data:`mlb_core.train.scenes.HELDOUT_KINDS`), through ``full`` and ``mlb`` on the same 20
    clips (clip k: frame k mod 10). The case where the committed weights' tower reads weak yellow
    in every frame (docs/training-record.md, "An object in one frame"), for any method alike."""
    n = max(2, int(round(20 * scale)))
    return [SightCondition(f"greyband10_{method}", 10, method, "cpu", n, GREY_BAND_KEY, one_frame=True,
                           background="grey-band") for method in ("full", "mlb")]


REDRAWN_KEY = 200  # one seed key for every redrawn condition: the same scenes in every convention and method


def redrawn_conditions(scale: float = 1.0, key: int = REDRAWN_KEY) -> list[SightCondition]:
    """The probe's words drawn another way (:mod:`mlb_core.train.redrawn`): per colour convention,
    12 clips (times ``scale``) of 40 frames through ``full`` on one frame and ``mlb`` at the ``cpu``
    preset (20 frames, ``mlb answer``'s default); the same scenes in every condition. ``key``: the
    scenes' seed key (the stage ``heldout_redrawn`` uses :data:`REDRAWN_KEY`; another key draws
    other scenes, sizes, paths and grounds)."""
    from mlb_core.train.redrawn import CONVENTIONS

    n = max(2, int(round(12 * scale)))
    return [SightCondition(f"redrawn_{conv}_{tag}", frames, method, "cpu", n, key, conv)
            for conv in CONVENTIONS for tag, frames, method in (("full1", 1, "full"), ("mlb20", 20, "mlb"))]


def one_frame_only(spec: scenes.ClipSpec, frame: int) -> scenes.ClipSpec:
    """``spec`` with every object on screen in ``frame`` only (0-based); the rest unchanged."""
    if not 0 <= frame < spec.n_frames:
        raise MLBError(f"frame {frame} is outside the clip's {spec.n_frames} frames")
    return replace(spec, objects=tuple(replace(o, first=frame, last=frame + 1) for o in spec.objects))


def _words(vocabulary: tuple[str, ...]) -> re.Pattern[str]:
    """Any vocabulary word as a whole word, case-insensitive (the longest first)."""
    return re.compile(r"\b(" + "|".join(sorted(vocabulary, key=len, reverse=True)) + r")\b", re.I)


def first_word(text: str, vocabulary: tuple[str, ...]) -> str | None:
    """The first vocabulary word in ``text`` (whole words, case-insensitive)."""
    m = _words(vocabulary).search(text)
    return m.group(1).lower() if m else None


def only_word(text: str, vocabulary: tuple[str, ...]) -> str | None:
    """The one vocabulary word ``text`` names (whole words, case-insensitive), or ``None`` when it
    names none or several different ones: the strict judge. "the red object is a square circle"
    has no shape by it, where :func:`first_word` reads "square"; a repeated word ("orange orange")
    is still one word."""
    found = {m.lower() for m in _words(vocabulary).findall(text)}
    return found.pop() if len(found) == 1 else None


def strict_counts(answers: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Right answers of each kind (``colour``, ``shape``) by the strict judge (:func:`only_word`),
    re-read from a result's saved ``answers``: ``{kind: (right, asked)}``. The first-word judge of
    :func:`measure_sight` counts an answer that names the truth first; this one also asks that it
    name no other word of the kind, so a hedge or a list of shapes is not right."""
    out: dict[str, list[int]] = {}
    for a in answers:
        vocab = scenes.COLOURS if a["kind"] == "colour" else scenes.SHAPES
        tally = out.setdefault(a["kind"], [0, 0])
        tally[0] += int(only_word(a["answer"], vocab) == a["truth"])
        tally[1] += 1
    return {kind: (k, n) for kind, (k, n) in out.items()}


def strict_accuracy(answers: list[dict[str, Any]], kind: str) -> float | None:
    """The strict judge's accuracy on ``kind`` questions (:func:`strict_counts`), ``None`` if none
    was asked."""
    k, n = strict_counts(answers).get(kind, (0, 0))
    return k / n if n else None


def format_judges(result: dict[str, Any]) -> str:
    """Right answers of each condition by both judges, from the saved answers (``mlb heldout
    --rescore``): the first colour (shape) word, as every result reports, and the strict judge
    (:func:`strict_counts`)."""
    w = max([14, *map(len, result["conditions"])])
    lines = [f"{'condition':{w}s} {'method':6s} {'frames':>6s} {'colour: first word':>18s} {'strict':>7s} "
             f"{'shape: first word':>17s} {'strict':>7s}"]
    for name, r in result["conditions"].items():
        answers = r.get("answers")
        if not answers:
            raise MLBError(f"{name}: the result keeps no answers to judge again")
        strict = strict_counts(answers)
        cells = []
        for kind in ("colour", "shape"):
            first = sum(int(a["right"]) for a in answers if a["kind"] == kind)
            k, n = strict.get(kind, (0, 0))
            cells += [f"{first}/{n}", f"{k}/{n}"]
        lines.append(f"{name:{w}s} {r['method']:6s} {r['n_frames']:6d} {cells[0]:>18s} {cells[1]:>7s} "
                     f"{cells[2]:>17s} {cells[3]:>7s}")
    return "\n".join(lines)


def write_clip(spec: scenes.ClipSpec, path: Path, bank: scenes.VideoBank) -> None:
    """Render a clip and write it as H.264 (the probe's deterministic writer)."""
    from mlb_core.evaluation.synthetic import write_mp4

    frames, _ = scenes.render_clip(spec, bank)
    write_mp4(path, list(frames), fps=5)


def measure_sight(model: str = "embedded", conditions: list[SightCondition] | None = None, workdir: str | Path = "",
                  seed: int = 0, progress: bool = True, questions: str = "train",
                  out: str | Path | None = None) -> dict[str, Any]:
    """Held-out accuracy per condition through the pipeline; per question kind (colour, shape).
    ``questions``: ``train`` (the training's wording) or ``paraphrase`` (:data:`PARAPHRASES`,
    with the accuracy of each wording under ``by_question``). Every condition's parameters are
    checked before the model loads; with ``out``, the result so far is written there after each
    condition (``"complete": false`` until the last), so a stopped run keeps what it finished."""
    import tempfile

    from tqdm.auto import tqdm

    from mlb_core.backbones.loading import load_model
    from mlb_core.config import get_preset
    from mlb_core.pipeline import answer, encode_video
    from mlb_core.selection.scores import StageOneCache
    from mlb_core.stage_two import StageTwoPrefix
    from mlb_core.train import redrawn

    conditions = conditions or default_conditions()
    _check_questions(questions)  # before the model loads
    for c in conditions:
        if c.convention is not None:
            redrawn.check_convention(c.convention)
        kinds = (*scenes.BACKGROUND_KINDS, *scenes.HELDOUT_KINDS)
        if c.background is not None and (c.convention is not None or c.background not in kinds):
            raise MLBError(f"{c.name}: background must be one of {', '.join(kinds)} "
                           f"(scenes' clips only), got {c.background!r}")
        if c.one_frame and (c.convention is not None or c.n_frames < 2):
            raise MLBError(f"{c.name}: one_frame needs scenes' clips of at least 2 frames")
        if c.n_objects not in (1, 2) or (c.convention is not None and c.n_objects != 1):
            raise MLBError(f"{c.name}: n_objects must be 1 or 2 (1 for redrawn clips), got {c.n_objects}")
    presets = [get_preset(c.preset, n_frames=c.n_frames, segment_frames=segment_frames_for(c.n_frames),
                          max_new_tokens=10) for c in conditions]
    vlm = load_model(model)
    bank = scenes.VideoBank()
    folder = Path(workdir or tempfile.mkdtemp(prefix="mlb-sight-"))
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    written: set[Path] = set()  # redrawn clips are shared by the conditions that ask the same scenes
    head = {"model": model, "seed": seed, "questions": questions,
            "judge": "first colour/shape word of the answer is the truth",
            "heldout": "seeds from scenes.HELDOUT_SEED_BASE + 7e6, backgrounds: plain, gradient and the "
                       "carphone clips (never used in training)"}
    if any(c.convention is not None for c in conditions):
        head["redrawn"] = redrawn.DESCRIPTION
    for ci, (cond, params) in enumerate(zip(conditions, presets, strict=True)):
        right = {"colour": [0, 0], "shape": [0, 0]}
        named_other = {"colour": 0, "shape": 0}  # answers naming another object's colour (shape) of the clip
        by_question: dict[str, list[int]] = {}
        t0 = time.perf_counter()
        examples = []
        answers: list[dict[str, Any]] = []  # every answer, for per-colour / per-shape reading of a result
        tokens: set[int] = set()
        for k in tqdm(range(cond.n_clips), desc=cond.name, disable=not progress):
            key = ci if cond.clip_key is None else cond.clip_key
            clip_seed = (scenes.HELDOUT_SEED_BASE + SEED_OFFSET + seed, key, k)
            if cond.convention is None:
                spec = scenes.sample_clip(clip_seed, n_frames=cond.n_frames, split="heldout",
                                          n_objects=cond.n_objects, p_partial=0.0, background=cond.background)
                if cond.one_frame:
                    spec = one_frame_only(spec, k % cond.n_frames)
                path = folder / f"{cond.name}_{k}.mp4"
                write_clip(spec, path, bank)
            else:
                drawn = redrawn.sample_redrawn(clip_seed, k, cond.convention)
                spec = drawn.as_clip_spec()
                path = folder / f"redrawn_{cond.convention}_{key}_{k}.mp4"
                if path not in written:
                    redrawn.write_redrawn(drawn, path)
                    written.add(path)
            feats = encode_video(vlm, path, cond.n_frames)
            # a clip's questions share its stage-one context and its question-free stage-two prefix
            scorer, prefix = StageOneCache(), StageTwoPrefix()
            for kind, question, truth, wording in sight_questions(spec, clip_seed, questions):
                vocab = tuple(scenes.PALETTE) if kind == "colour" else scenes.SHAPES
                a = answer(vlm, feats, question, cond.method, params, scorer=scorer, prefix=prefix)
                tokens.add(a.n_visual_tokens)
                said = first_word(a.text, vocab)
                ok = said == truth
                others = [getattr(o, kind) for o in spec.objects if getattr(o, kind) != truth]
                named_other[kind] += int(said in others)
                right[kind][0] += int(ok)
                right[kind][1] += 1
                tally = by_question.setdefault(wording, [0, 0])
                tally[0] += int(ok)
                tally[1] += 1
                answers.append({"clip": k, "kind": kind, "question": question, "truth": truth, "said": said,
                                "answer": a.text, "right": ok, **({"others": others} if others else {})})
                if len(examples) < 2:
                    examples.append({"question": question, "truth": truth, "answer": a.text,
                                     "visual_tokens": a.n_visual_tokens})
        k_all = sum(v[0] for v in right.values())
        n_all = sum(v[1] for v in right.values())
        if n_all == 0:
            raise MLBError(f"{cond.name}: no colour or shape question was asked")
        results[cond.name] = {**asdict(cond), "accuracy": k_all / n_all, "n": n_all,
                              "visual_tokens": max(tokens),
                              **{f"{kind}_accuracy": (v[0] / v[1] if v[1] else None) for kind, v in right.items()},
                              **{f"{kind}_n": v[1] for kind, v in right.items()},
                              **{f"{kind}_constant": constant_share(answers, kind) for kind in right},
                              "seconds": round(time.perf_counter() - t0, 1), "examples": examples,
                              "answers": answers,
                              **({f"{kind}_other_share": (v / right[kind][1] if right[kind][1] else None)
                                  for kind, v in named_other.items()} if cond.n_objects > 1 else {}),
                              **({"by_question": {t: {"accuracy": k / n, "n": n} for t, (k, n) in by_question.items()}}
                                 if questions == "paraphrase" else {})}
        if out:
            write_sight({**head, "complete": ci == len(conditions) - 1, "conditions": results}, out)
    return {**head, "conditions": results}


def constant_share(answers: list[dict[str, Any]], kind: str) -> float | None:
    """The accuracy of the best constant answer on a condition's ``kind`` questions: the share of
    its commonest truth (a few clips can share a colour, and a model that always names it scores
    that much without seeing; docs/training-record.md, "A recipe with long layouts")."""
    truths = [a["truth"] for a in answers if a["kind"] == kind]
    return max(truths.count(t) for t in set(truths)) / len(truths) if truths else None


def format_sight(result: dict[str, Any]) -> str:
    """A plain-text table of :func:`measure_sight`'s result, with what the best constant answer
    would score (:func:`constant_share`) and the strict judge's accuracy (:func:`strict_counts`);
    with two-object conditions, also the share of colour (shape) answers that name the other
    object's colour (shape)."""
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.0f}%"

    w = max([14, *map(len, result["conditions"])])  # redrawn_tab10_full1 and the like are longer
    other = any("colour_other_share" in r for r in result["conditions"].values())
    lines = [f"{'condition':{w}s} {'method':6s} {'frames':>6s} {'tokens':>6s} {'n':>4s} {'colour':>7s} {'shape':>7s} "
             f"{'all':>6s} {'constant answer: colour/shape':>29s} {'strict: colour/shape':>20s}"
             + (f" {'colour: other object':>20s} {'shape: other object':>19s}" if other else "")]
    for name, r in result["conditions"].items():
        const = "/".join(pct(constant_share(r.get("answers", []), kind)) for kind in ("colour", "shape"))
        strict = "/".join(pct(strict_accuracy(r.get("answers", []), kind)) for kind in ("colour", "shape"))
        lines.append(f"{name:{w}s} {r['method']:6s} {r['n_frames']:6d} {r.get('visual_tokens', '-'):>6} {r['n']:4d} "
                     f"{pct(r['colour_accuracy']):>7s} "
                     f"{pct(r['shape_accuracy']):>7s} {pct(r['accuracy']):>6s} {const:>29s} {strict:>20s}"
                     + (f" {pct(r.get('colour_other_share')):>20s} {pct(r.get('shape_other_share')):>19s}"
                        if other else ""))
    return "\n".join(lines)


def write_sight(result: dict[str, Any], path: str | Path) -> None:
    """The result as JSON, floats rounded to 6 significant digits (atomic)."""
    def clean(x: Any) -> Any:
        if isinstance(x, float):
            return float(f"{x:.6g}")
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        if isinstance(x, np.generic):
            return clean(x.item())
        return x

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(clean(result), indent=1) + "\n")
    tmp.replace(path)


def read_sight(path: str | Path) -> dict[str, Any]:
    """A result written by :func:`write_sight` (``mlb heldout --out``), checked to be one."""
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        raise MLBError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MLBError(f"{path}: not a held-out result ({type(e).__name__}: {e})") from None
    if not isinstance(result, dict) or not isinstance(result.get("conditions"), dict):
        raise MLBError(f"{path}: not a held-out result (no 'conditions'; written by mlb heldout --out)")
    return result


def length_curve_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (condition, question kind) of a :func:`measure_sight` result: method, frames,
    visual tokens, accuracy and its 95% Wilson interval (the data of :func:`plot_length_curve`)."""
    from mlb_core.study.probe_analysis import wilson

    rows = []
    for name, r in result["conditions"].items():
        for kind in ("colour", "shape"):
            n, acc = r[f"{kind}_n"], r[f"{kind}_accuracy"]
            if not n:
                continue
            k = int(round(acc * n))
            lo, hi = wilson(k, n)
            rows.append({"condition": name, "method": r["method"], "n_frames": r["n_frames"],
                         "visual_tokens": r["visual_tokens"], "kind": kind,
                         "k": k, "n": n, "accuracy": k / n, "low": lo, "high": hi})
    return rows


def plot_length_curve(result: dict[str, Any], path: str | Path, context: int = 8192) -> Path:
    """Held-out accuracy against visual tokens, one panel per question kind, a line per method,
    95% Wilson intervals, chance and the LM's context marked; written to ``path`` (png)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = length_curve_rows(result)
    if not rows:
        raise MLBError("no condition with colour or shape questions to plot")
    chance = {"colour": 1 / len(scenes.PALETTE), "shape": 1 / len(scenes.SHAPES)}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, kind in zip(axes, ("colour", "shape"), strict=True):
        for method, colour in (("full", "#4c72b0"), ("mlb", "#dd8452")):
            pts = sorted((r for r in rows if r["kind"] == kind and r["method"] == method),
                         key=lambda r: r["visual_tokens"])
            if not pts:
                continue
            x = [p["visual_tokens"] for p in pts]
            y = [p["accuracy"] for p in pts]
            err = [[p["accuracy"] - p["low"] for p in pts], [p["high"] - p["accuracy"] for p in pts]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=colour, label=method)
            for p in pts:
                ax.annotate(f"{p['n_frames']}f", (p["visual_tokens"], p["accuracy"]), textcoords="offset points",
                            xytext=(4, 4), fontsize=7, color=colour)
        ax.axhline(chance[kind], ls=":", color="grey", label="chance")
        ax.axvline(context, ls="--", color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks([300, 600, 1200, 2400, 4800, 8192], ["300", "600", "1.2K", "2.4K", "4.8K", "8.2K"])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("visual tokens (log scale; labels: frames)")
        ax.set_title(f"{kind} (n = {max(r['n'] for r in rows if r['kind'] == kind)} per point)")
        ax.set_ylim(-0.02, 1.1)
    axes[0].set_ylabel("held-out accuracy (95% Wilson)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"Held-out sight by length: {result['model']} (same clips at every length; "
                 f"dashed: the LM's {context}-token context)", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
