"""A synthetic probe benchmark: where in the video does the evidence sit? [ours]

The paper's Figs. 1-2 show that the LLM's attention favours late positions, so a method
that selects tokens by raw attention (``segattn-topk``) should answer questions about the
*end* of a video better than questions about its *beginning*; GAPool + VSTail (``mlb``)
should flatten that split. Public benchmarks do not record where each answer's evidence
is, so this probe generates videos where it is known exactly.

Every clip (``n_frames`` frames, ``fps``, ``size``) shows a plain scene (a vertical grey
gradient with a small white ball crossing it: motion, but no colour). The clip is cut into
thirds (``early``, ``middle``, ``late``); in each third exactly one coloured shape
(``square``, ``circle``, ``triangle``) is shown, in a colour of its own, and is absent
from the other two thirds. Which shape sits in which third rotates from clip to clip
(a Latin square over every 3 clips, then mirrored), so every shape is asked about at
every position. For each shape there is one open-ended question (``What colour is the
circle?`` -> ``red``) and one multiple-choice question (4 colours: the right one, the two
other colours of that clip, which a position-biased model will pick, and one more),
each recording its evidence position and frame span.

Output (``mlb synth --out DIR``)::

    DIR/videos/synth00.mp4 ...   H.264 (PyAV, libx264, one thread: byte-identical reruns)
    DIR/synthetic.csv            video_name,question_id,question,answer,question_type,task,
                                 position,shape,evidence_start,evidence_end,a0..a3,answer_number
    DIR/manifest.json            the generation config, file hashes, counts

The open-ended form is scored by :class:`mlb_core.evaluation.judge.KeywordJudge` (offline, no server).
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlb_core.errors import MLBError

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (240, 220, 30),
    "purple": (150, 50, 200),
    "orange": (250, 140, 20),
}
SHAPES = ("square", "circle", "triangle")
POSITIONS = ("early", "middle", "late")
CSV_COLUMNS = ("video_name", "question_id", "question", "answer", "question_type", "task", "position",
               "shape", "evidence_start", "evidence_end", "a0", "a1", "a2", "a3", "answer_number")


@dataclass(frozen=True)
class SynthConfig:
    """Size and look of the probe (``params.yaml`` can set every field).

    Attributes:
        n_videos: clips; 3 clips put every shape in every third once (18 questions with
            both forms).
        n_frames: frames per clip (split into thirds).
        fps: frame rate written to the file.
        size: ``(width, height)`` in pixels (even numbers, for yuv420p).
        forms: ``open`` and/or ``mc`` questions.
        n_options: options per multiple-choice question (2..len(PALETTE)).
        seed: colours, positions inside the frame and option order.
    """

    n_videos: int = 3
    n_frames: int = 90
    fps: int = 10
    size: tuple[int, int] = (224, 168)
    forms: tuple[str, ...] = ("open", "mc")
    n_options: int = 4
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "forms", tuple(self.forms))
        if self.n_videos < 1:
            raise MLBError(f"n_videos must be >= 1, got {self.n_videos}")
        if self.n_frames < 3:
            raise MLBError(f"n_frames must be >= 3 (three thirds), got {self.n_frames}")
        if len(self.size) != 2 or min(self.size) < 32 or any(s % 2 for s in self.size):
            raise MLBError(f"size must be two even numbers >= 32, got {list(self.size)}")
        if not self.forms or set(self.forms) - {"open", "mc"}:
            raise MLBError(f"forms must be a non-empty subset of open, mc; got {list(self.forms)}")
        if not 2 <= self.n_options <= min(5, len(PALETTE)):
            raise MLBError(f"n_options must be 2..5, got {self.n_options}")
        if self.fps < 1:
            raise MLBError(f"fps must be >= 1, got {self.fps}")


@dataclass(frozen=True)
class ClipPlan:
    """What one clip shows: per third, the shape, its colour and its place in the frame."""

    name: str
    shapes: tuple[str, str, str]  # by position: early, middle, late
    colours: tuple[str, str, str]
    centres: tuple[tuple[int, int], ...]  # (x, y) per position
    radius: int
    spans: tuple[tuple[int, int], ...]  # [start, end) frame indices per position


def third_spans(n_frames: int) -> tuple[tuple[int, int], ...]:
    """[start, end) frame indices of the early, middle and late thirds."""
    edges = [round(k * n_frames / 3) for k in range(4)]
    return tuple((edges[k], edges[k + 1]) for k in range(3))


def plan_clip(cfg: SynthConfig, v: int) -> ClipPlan:
    """Deterministic plan of clip ``v``: shapes rotate over positions (Latin square, mirrored
    every other block of 3 clips); colours and places come from ``seed`` and ``v``."""
    rng = np.random.default_rng([cfg.seed, v])
    order = list(SHAPES) if (v // 3) % 2 == 0 else list(reversed(SHAPES))
    shift = v % 3
    shapes = tuple(order[shift:] + order[:shift])
    colours = tuple(str(c) for c in rng.choice(list(PALETTE), size=3, replace=False))
    w, h = cfg.size
    radius = max(6, int(0.22 * min(w, h)))
    centres = tuple((int(rng.integers(radius + 2, w - radius - 2)), int(rng.integers(radius + 2, h - radius - 2)))
                    for _ in range(3))
    return ClipPlan(f"synth{v:02d}", shapes, colours, centres, radius, third_spans(cfg.n_frames))  # type: ignore[arg-type]


def shape_mask(shape: str, centre: tuple[int, int], radius: int, hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool mask of a filled square, circle or upward triangle."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy = centre
    dx, dy = xx - cx, yy - cy
    if shape == "square":
        return (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    if shape == "circle":
        return dx * dx + dy * dy <= radius * radius
    if shape == "triangle":  # apex up, base at cy + radius
        top, bottom = cy - radius, cy + radius
        frac = (yy - top) / max(1, bottom - top)  # 0 at apex, 1 at base
        return (yy >= top) & (yy <= bottom) & (np.abs(dx) <= frac * radius)
    raise MLBError(f"unknown shape {shape!r}")


def render_frame(cfg: SynthConfig, plan: ClipPlan, t: int) -> np.ndarray:
    """Frame ``t`` of a clip: (H, W, 3) uint8."""
    w, h = cfg.size
    grad = np.linspace(200, 90, h, dtype=np.float32)[:, None, None]  # (H, 1, 1) light top -> dark bottom
    frame = np.broadcast_to(grad, (h, w, 3)).copy()
    # a small white ball crossing the scene over the whole clip (motion without colour)
    bx = int(round((t + 0.5) / cfg.n_frames * w))
    by = int(h * 0.82)
    frame[shape_mask("circle", (bx, by), max(3, h // 24), (h, w))] = 245.0
    for k, (start, end) in enumerate(plan.spans):
        if start <= t < end:
            frame[shape_mask(plan.shapes[k], plan.centres[k], plan.radius, (h, w))] = PALETTE[plan.colours[k]]
    return frame.astype(np.uint8)


def rgb_to_i420(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3H/2, W) uint8 I420 planes (BT.601, limited range, 2x2 chroma means).

    Done here rather than by swscale so that the encoder's input is bit-exact on every run.
    """
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    h, w = r.shape
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = (128 - 0.148 * r - 0.291 * g + 0.439 * b).reshape(h // 2, 2, w // 2, 2).mean((1, 3))
    v = (128 + 0.439 * r - 0.368 * g - 0.071 * b).reshape(h // 2, 2, w // 2, 2).mean((1, 3))
    planes = np.concatenate([y.ravel(), u.ravel(), v.ravel()])
    return np.clip(np.round(planes), 0, 255).astype(np.uint8).reshape(h * 3 // 2, w)


def write_mp4(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """H.264 yuv420p mp4 with PyAV: our own RGB->I420, explicit timestamps, one encoder thread,
    a fixed CRF and no AQ / mbtree / psy-rd, so that reruns write byte-identical files."""
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", format="mp4") as container:
        # x264's adaptive quantisation / macroblock tree / psy-rd made the bitstream vary from
        # run to run here (the decoded frames did not); with them off it is reproducible.
        options = {"crf": "12", "preset": "medium", "threads": "1", "x264-params": "aq-mode=0:mbtree=0:psy=0"}
        stream = container.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.thread_count = 1
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(rgb_to_i420(frame), format="yuv420p")
            vf.pts = i
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def questions_for(cfg: SynthConfig, plan: ClipPlan) -> list[dict[str, Any]]:
    """The CSV rows of one clip: per position (early, middle, late) and form (open, mc)."""
    rng = np.random.default_rng([cfg.seed, 1000 + int(plan.name[5:])])
    rows = []
    for k, position in enumerate(POSITIONS):
        shape, colour = plan.shapes[k], plan.colours[k]
        question = f"What colour is the {shape} in the video?"
        start, end = plan.spans[k]
        base = {"video_name": plan.name, "question": question, "answer": colour, "question_type": "colour",
                "position": position, "shape": shape, "evidence_start": start, "evidence_end": end}
        for form in ("open", "mc"):
            if form not in cfg.forms:
                continue
            row = {**base, "question_id": f"{plan.name}-{position}-{form}", "task": form}
            if form == "mc":
                others = [c for c in plan.colours if c != colour]
                rest = [c for c in PALETTE if c not in plan.colours]
                pool = others + [str(c) for c in rng.permutation(rest)]
                options = [colour] + pool[: cfg.n_options - 1]
                perm = rng.permutation(len(options))
                options = [options[i] for i in perm]
                for i, opt in enumerate(options):
                    row[f"a{i}"] = opt
                row["answer_number"] = options.index(colour)
            rows.append(row)
    return rows


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generate(out: str | Path, cfg: SynthConfig | None = None) -> dict[str, Any]:
    """Write the probe to ``out`` (videos, ``synthetic.csv``, ``manifest.json``).

    Deterministic: the same config writes byte-identical files. Returns the manifest.
    """
    cfg = cfg or SynthConfig()
    out = Path(out)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    files: dict[str, str] = {}
    for v in range(cfg.n_videos):
        plan = plan_clip(cfg, v)
        path = videos / f"{plan.name}.mp4"
        write_mp4(path, [render_frame(cfg, plan, t) for t in range(cfg.n_frames)], cfg.fps)
        files[f"videos/{path.name}"] = _sha256(path)
        rows.extend(questions_for(cfg, plan))
    csv_path = out / "synthetic.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in CSV_COLUMNS})
    files["synthetic.csv"] = _sha256(csv_path)
    config = asdict(cfg)
    config.pop("extra")
    config["size"], config["forms"] = list(cfg.size), list(cfg.forms)
    manifest = {
        "benchmark": "synthetic",
        "config": config,
        "n_videos": cfg.n_videos,
        "n_questions": len(rows),
        "by_position": {p: sum(r["position"] == p for r in rows) for p in POSITIONS},
        "by_task": {t: sum(r["task"] == t for r in rows) for t in cfg.forms},
        "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
