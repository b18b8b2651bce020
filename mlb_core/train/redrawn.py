"""The probe's vocabulary drawn another way: held-out clips that share no drawing code with
:mod:`mlb_core.train.scenes` (docs/training-record.md, "Drawn another way").

The training and the standard held-out check draw their shapes with one function
(:func:`mlb_core.evaluation.synthetic.shape_mask`: hard-edged masks, six fixed RGB values, 336 x
336 frames, our own RGB -> YUV conversion and near-lossless H.264). A reader's own test videos
will differ in all of that, so this module draws the same words (six colours, three shapes)
with everything else changed:

* drawing: PIL polygons and ellipses, anti-aliased (drawn at 4x and downsampled with a Lanczos
  filter); the square is the full bounding square, the triangle equilateral;
* colours: one of :data:`CONVENTIONS` per condition: our palette (a control of the renderer
  alone), the CSS named colours, matplotlib's ``tab10`` and a saturated set;
* frames: 640 x 480 (4:3, squashed to 336 x 336 by the image processor), 40 frames at 10 fps, the
  shape moving on a straight line;
* backgrounds: white, light grey, mid grey, near black, a sky gradient and coarse colour noise;
* encoding: PyAV's libx264 at CRF 23 (its usual default), with libswscale's RGB -> YUV
  conversion.

Everything is a pure function of the seed. The clip's truth is one colour word and one shape
word, asked in the training's wording (:func:`mlb_core.train.sight.sight_questions`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlb_core.errors import MLBError
from mlb_core.train import scenes

RGB = tuple[int, int, int]
# Colour name -> RGB under four conventions; the names are the probe's six colours.
CONVENTIONS: dict[str, dict[str, RGB]] = {
    "ours": dict(scenes.PALETTE),
    # CSS Color Module Level 3 named colours
    "css": {"red": (255, 0, 0), "green": (0, 128, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
            "purple": (128, 0, 128), "orange": (255, 165, 0)},
    # matplotlib's tab10 (it has no yellow: CSS "gold")
    "tab10": {"red": (214, 39, 40), "green": (44, 160, 44), "blue": (31, 119, 180), "yellow": (255, 215, 0),
              "purple": (148, 103, 189), "orange": (255, 127, 14)},
    # saturated screen colours (X11 "purple" is 160, 32, 240)
    "vivid": {"red": (230, 0, 0), "green": (0, 220, 0), "blue": (20, 40, 255), "yellow": (250, 250, 60),
              "purple": (160, 32, 240), "orange": (255, 140, 0)},
}
BACKGROUNDS: tuple[str, ...] = ("white", "light", "grey", "dark", "sky", "noise")
_FLAT: dict[str, RGB] = {"white": (255, 255, 255), "light": (235, 235, 235), "grey": (128, 128, 128),
                         "dark": (20, 20, 20)}
WIDTH, HEIGHT = 640, 480
CLIP_FRAMES = 40
FPS = 10
SUPERSAMPLE = 4
SEED_BASE = 9_000_000  # seeds of this check only (the training draws from scenes' own streams)
assert len(CONVENTIONS) == 4, "DESCRIPTION says four conventions"
DESCRIPTION = ("mlb_core.train.redrawn: PIL-drawn, anti-aliased shapes in four colour conventions, "
               f"{WIDTH} x {HEIGHT}, {CLIP_FRAMES} frames at {FPS} fps, libx264 CRF 23 (no drawing code shared "
               "with the training)")  # what a result of these clips says it measured


@dataclass(frozen=True)
class RedrawnSpec:
    """One clip: a ``colour`` (a probe word, drawn as ``rgb``) ``shape`` of radius ``radius`` px
    moving from ``start`` to ``end`` (centre, px) over ``n_frames`` frames on ``background``."""

    colour: str
    rgb: RGB
    shape: str
    radius: float
    start: tuple[float, float]
    end: tuple[float, float]
    background: str
    noise_seed: int
    n_frames: int = CLIP_FRAMES

    def centre_at(self, t: int) -> tuple[float, float]:
        a = t / max(1, self.n_frames - 1)
        return (self.start[0] + (self.end[0] - self.start[0]) * a, self.start[1] + (self.end[1] - self.start[1]) * a)

    def as_clip_spec(self) -> scenes.ClipSpec:
        """The same truth as a :class:`scenes.ClipSpec` (for the training's question wording)."""
        obj = scenes.ObjectSpec(self.colour, self.shape, self.radius, self.start, (0.0, 0.0), 0, self.n_frames)
        return scenes.ClipSpec(self.n_frames, (obj,), "plain")


def check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise MLBError(f"unknown colour convention {convention!r}; choose from {', '.join(CONVENTIONS)}")


def sample_redrawn(seed: int | tuple[int, ...], k: int, convention: str) -> RedrawnSpec:
    """Clip ``k`` of a condition: colour and shape cycle through all 18 pairs (k mod 6, then the
    shape shifted every 6 clips), size, path and background come from ``seed`` and ``k``, so that
    every convention draws the same scenes."""
    check_convention(convention)
    rng = np.random.default_rng([SEED_BASE, *np.atleast_1d(seed).tolist(), k])
    colour = scenes.COLOURS[k % len(scenes.COLOURS)]
    shape = scenes.SHAPES[(k + k // len(scenes.COLOURS)) % len(scenes.SHAPES)]
    radius = float(rng.uniform(35, 120))  # about 2.5 to 8.5 patch widths across at 336 px
    start = (float(rng.uniform(radius, WIDTH - radius)), float(rng.uniform(radius, HEIGHT - radius)))
    end = (float(rng.uniform(radius, WIDTH - radius)), float(rng.uniform(radius, HEIGHT - radius)))
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    return RedrawnSpec(colour, CONVENTIONS[convention][colour], shape, radius, start, end, background,
                       int(rng.integers(1 << 31)))


def _background(spec: RedrawnSpec, w: int, h: int):
    from PIL import Image

    if spec.background in _FLAT:
        return Image.new("RGB", (w, h), _FLAT[spec.background])
    if spec.background == "sky":
        g = np.linspace(0.0, 1.0, HEIGHT)[:, None, None]  # (H, 1, 1)
        sky = np.array([135, 206, 235]) * (1 - g) + np.array([240, 248, 255]) * g
        return Image.fromarray(np.broadcast_to(sky, (HEIGHT, WIDTH, 3)).astype(np.uint8)).resize((w, h))
    noise = np.random.default_rng(spec.noise_seed).integers(0, 256, (HEIGHT // 16, WIDTH // 16, 3), dtype=np.uint8)
    return Image.fromarray(noise).resize((w, h), Image.NEAREST)  # 16-px colour blocks


def render_redrawn(spec: RedrawnSpec) -> np.ndarray:
    """The clip's frames, (T, 480, 640, 3) uint8, drawn with PIL at 4x and downsampled."""
    from PIL import Image, ImageDraw

    s = SUPERSAMPLE
    ground = _background(spec, WIDTH * s, HEIGHT * s)  # the same in every frame: drawn once
    frames = []
    for t in range(spec.n_frames):
        img = ground.copy()
        draw = ImageDraw.Draw(img)
        (cx, cy), r = spec.centre_at(t), spec.radius
        x, y, r = cx * s, cy * s, r * s
        if spec.shape == "circle":
            draw.ellipse([x - r, y - r, x + r, y + r], fill=spec.rgb)
        elif spec.shape == "square":
            draw.rectangle([x - r, y - r, x + r, y + r], fill=spec.rgb)
        elif spec.shape == "triangle":  # equilateral, apex up, inscribed in the circle of radius r
            half = r * math.sqrt(3) / 2
            draw.polygon([(x, y - r), (x - half, y + r / 2), (x + half, y + r / 2)], fill=spec.rgb)
        else:
            raise MLBError(f"unknown shape {spec.shape!r}")
        frames.append(np.asarray(img.resize((WIDTH, HEIGHT), Image.LANCZOS)))
    return np.stack(frames)  # (T, H, W, 3)


def write_redrawn(spec: RedrawnSpec, path: str | Path) -> Path:
    """Render the clip and write it as H.264 with PyAV's libx264 defaults (CRF 23, yuv420p via
    libswscale; one thread, so that a rerun writes the same bytes)."""
    import av

    path = Path(path)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"crf": "23", "threads": "1"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i, frame in enumerate(render_redrawn(spec)):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
