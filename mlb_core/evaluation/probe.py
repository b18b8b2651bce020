"""Probe v2: evidence placed by *slot* inside a segment and by *segment* inside the video [ours].

Why a second probe (docs/method.md, "Where the bias bites"): stage one scores every segment
on its own, so top-k selection starves the early *slots* of a segment wherever the segment
sits; stage two reads one long sequence and favours its *end*, which VSTail addresses. The
first probe (:mod:`mlb_core.evaluation.synthetic`, a shape in each third of a long clip)
separates neither. Here every clip has exactly ``n_frames`` frames, so uniform sampling of
``n_frames`` frames keeps every frame and each frame has a known segment and slot.

Design (fixed before any method is run on it, and never tuned towards one):

- a **target** (one coloured shape) is visible in exactly **one** frame; the design crosses
  the segment it sits in (``first``, ``middle``, ``last``; ``middle`` only with three or
  more segments) with its slot ``1..segment_frames``;
- two **target sizes**: ``large`` (radius 0.18 of the frame: it covers a large share of a
  2 x 2 tail cell, so it survives VSTail's pooling) and ``small`` (radius 0.055: a few
  patches, diluted to a few percent of a tail cell);
- **distractors**: in ``distractor_share`` of the other frames, one salient shape of
  another kind in one of two other colours (the clip's distractor colours), which compete
  for a top-k budget;
- a **reversed-order control**: every clip is also written with its frames reversed (the
  same pixels, evidence at the mirrored slot and segment);
- open-ended (``What colour is the circle in the video?`` -> ``red``) and multiple-choice
  forms; the multiple-choice foils are the two distractor colours and one more colour.

Output (``mlb probe --out DIR``)::

    DIR/videos/probe000f.mp4 ...   H.264, byte-identical reruns (as the first probe)
    DIR/probe.csv                  video_name,question_id,question,answer,question_type,task,
                                   position,slot,segment,size,order,shape,evidence_start,
                                   evidence_end,a0..a3,answer_number
    DIR/manifest.json              the config, counts per cell, file hashes

``position`` is the segment's label, so the evaluation runner's per-position grouping
works unchanged; ``slot``, ``size`` and ``order`` travel with every prediction record.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mlb_core.errors import MLBError
from mlb_core.evaluation.synthetic import PALETTE, SHAPES, shape_mask, write_mp4

SEGMENT_LABELS = ("first", "middle", "last")
SIZES = {"large": 0.18, "small": 0.055}  # radius as a fraction of the frame side
ORDERS = ("forward", "reversed")
CSV_COLUMNS = ("video_name", "question_id", "question", "answer", "question_type", "task", "position", "slot",
               "segment", "size", "order", "shape", "evidence_start", "evidence_end", "a0", "a1", "a2", "a3",
               "answer_number")


@dataclass(frozen=True)
class ProbeConfig:
    """Size of the probe; ``params.yaml`` (section ``probe``) sets every field.

    Attributes:
        n_frames: frames per clip, a multiple of ``segment_frames``.
        segment_frames: SegAttn's segment length the slots refer to.
        side: frame width = height in pixels (even; square, so no processor crops it).
        sizes: target sizes, from :data:`SIZES`.
        orders: ``forward`` and/or ``reversed`` (the control).
        repeats: clips per (segment, slot, size) cell, each with its own colours and places.
        forms: ``open`` and/or ``mc``.
        distractor_share: share of the non-target frames that show a distractor.
        distractors: ``False`` writes the no-distractor control: the same clips (target, its
            frame, colour, shape, size and place) with the distractors left out.
        sweep: ``True`` shows every clip's target at each frame in turn: ``sizes x repeats``
            clips (one target each: colour, shape, size and place), each written once per
            frame of the video (every segment, not only first / middle / last), so that slots
            and segments are compared on the same clips, pair by pair
            (:func:`mlb_core.study.probe_analysis.paired_slots`).
        isolated: ``True`` writes the one-frame control: each clip's target frame alone, as a
            one-frame file under the clip's own name, with the clip's rows (segment, slot,
            size, order). Answered by ``full`` on one frame, it says how hard each clip's target
            is with nothing around it, so that a difference between slots can be told apart from
            a difference between the clips drawn for them (:func:`mlb_core.study.probe_analysis.difficulty_table`).
        fps, seed: frame rate of the files; colours, shapes and places.
    """

    n_frames: int = 10
    segment_frames: int = 5
    side: int = 336
    sizes: tuple[str, ...] = ("large", "small")
    orders: tuple[str, ...] = ORDERS
    repeats: int = 1
    forms: tuple[str, ...] = ("open", "mc")
    distractor_share: float = 0.5
    distractors: bool = True
    sweep: bool = False
    isolated: bool = False
    fps: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("sizes", "orders", "forms"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.segment_frames < 1 or self.n_frames < self.segment_frames or self.n_frames % self.segment_frames:
            raise MLBError(f"n_frames ({self.n_frames}) must be a positive multiple of segment_frames "
                           f"({self.segment_frames})")
        if self.side < 32 or self.side % 2:
            raise MLBError(f"side must be an even number >= 32, got {self.side}")
        for name, allowed in (("sizes", SIZES), ("orders", ORDERS), ("forms", ("open", "mc"))):
            values = getattr(self, name)
            if not values or set(values) - set(allowed):
                raise MLBError(f"{name} must be a non-empty subset of {', '.join(allowed)}; got {list(values)}")
        if self.repeats < 1 or self.fps < 1:
            raise MLBError(f"repeats and fps must be >= 1, got {self.repeats}, {self.fps}")
        if not 0 <= self.distractor_share <= 1:
            raise MLBError(f"distractor_share must be in [0, 1], got {self.distractor_share}")

    @property
    def n_segments(self) -> int:
        return self.n_frames // self.segment_frames

    def segments(self) -> dict[str, int]:
        """Segment label -> segment index (``middle`` only with three or more segments)."""
        n = self.n_segments
        out = {"first": 0, "middle": (n - 1) // 2, "last": n - 1}
        return {k: v for k, v in out.items() if k != "middle" or n >= 3} if n > 1 else {"first": 0}


@dataclass(frozen=True)
class ProbeClip:
    """One clip of the design (in forward order) and what it shows."""

    index: int
    segment_label: str
    segment: int
    slot: int  # 1-based slot of the target frame inside its segment
    size: str
    shape: str
    colour: str
    centre: tuple[int, int]
    distractor_colours: tuple[str, str]
    distractors: tuple[tuple[int, str, str, tuple[int, int]], ...]  # (frame, shape, colour, centre)
    swept: bool = False  # one of a sweep's clips: the same index at every frame


def target_frame_of(cfg: ProbeConfig, clip: ProbeClip, order: str) -> int:
    """0-based frame of the target in the file written in ``order``."""
    t = clip.segment * cfg.segment_frames + clip.slot - 1
    return t if order == "forward" else cfg.n_frames - 1 - t


def design(cfg: ProbeConfig) -> list[ProbeClip]:
    """Every clip of the probe: segments x slots x sizes x repeats, deterministic from ``seed``;
    with ``cfg.sweep``, sizes x repeats clips, each at every frame (the same index, so the same
    target, in every slot and segment)."""
    clips = []
    i = 0
    if cfg.sweep:
        labels = {v: k for k, v in cfg.segments().items()}
        for size in cfg.sizes:
            for _ in range(cfg.repeats):
                for seg in range(cfg.n_segments):
                    for slot in range(1, cfg.segment_frames + 1):
                        label = labels.get(seg, f"segment{seg + 1}")
                        clips.append(replace(_plan(cfg, i, label, seg, slot, size), swept=True))
                i += 1
        return clips
    for label, seg in cfg.segments().items():
        for slot in range(1, cfg.segment_frames + 1):
            for size in cfg.sizes:
                for _ in range(cfg.repeats):
                    clips.append(_plan(cfg, i, label, seg, slot, size))
                    i += 1
    return clips


def _place(rng: np.random.Generator, side: int, radius: int) -> tuple[int, int]:
    lo, hi = radius + 2, side - radius - 2
    return int(rng.integers(lo, hi)), int(rng.integers(lo, hi))


def _plan(cfg: ProbeConfig, i: int, label: str, seg: int, slot: int, size: str) -> ProbeClip:
    rng = np.random.default_rng([cfg.seed, i])
    colours = [str(c) for c in rng.permutation(list(PALETTE))]
    colour, distractor_colours = colours[0], (colours[1], colours[2])
    shape = str(SHAPES[int(rng.integers(len(SHAPES)))])
    others = [s for s in SHAPES if s != shape]
    radius = max(3, int(SIZES[size] * cfg.side))
    target_t = seg * cfg.segment_frames + slot - 1
    rest = [t for t in range(cfg.n_frames) if t != target_t]
    n_distract = int(round(cfg.distractor_share * len(rest)))
    frames = sorted(int(t) for t in rng.choice(rest, size=n_distract, replace=False)) if n_distract else []
    d_radius = max(3, int(SIZES["large"] * cfg.side))
    distractors = tuple((t, str(others[int(rng.integers(len(others)))]),
                         distractor_colours[int(rng.integers(2))], _place(rng, cfg.side, d_radius)) for t in frames)
    centre = _place(rng, cfg.side, radius)  # drawn after the distractors: the control keeps the same target
    return ProbeClip(i, label, seg, slot, size, shape, colour, centre, distractor_colours,
                     distractors if cfg.distractors else ())


def render_clip(cfg: ProbeConfig, clip: ProbeClip) -> list[np.ndarray]:
    """The clip's frames in forward order, each (side, side, 3) uint8: a grey vertical gradient,
    the target in its one frame, a distractor in some others."""
    s = cfg.side
    grad = np.linspace(205, 95, s, dtype=np.float32)[:, None, None]  # (H, 1, 1)
    target_t = clip.segment * cfg.segment_frames + clip.slot - 1
    radius = max(3, int(SIZES[clip.size] * s))
    d_radius = max(3, int(SIZES["large"] * s))
    by_frame = {t: (shape, colour, centre) for t, shape, colour, centre in clip.distractors}
    frames = []
    for t in range(cfg.n_frames):
        frame = np.broadcast_to(grad, (s, s, 3)).copy()
        if t in by_frame:
            shape, colour, centre = by_frame[t]
            frame[shape_mask(shape, centre, d_radius, (s, s))] = PALETTE[colour]
        if t == target_t:
            frame[shape_mask(clip.shape, clip.centre, radius, (s, s))] = PALETTE[clip.colour]
        frames.append(frame.astype(np.uint8))
    return frames


def questions(cfg: ProbeConfig, clip: ProbeClip, order: str, name: str) -> list[dict[str, Any]]:
    """The CSV rows of one written clip (one per form)."""
    rng = np.random.default_rng([cfg.seed, 10_000 + clip.index, ORDERS.index(order)])
    t = target_frame_of(cfg, clip, order)
    seg, slot = divmod(t, cfg.segment_frames)
    labels = {v: k for k, v in cfg.segments().items()}
    start = 0 if cfg.isolated else t  # the one-frame control's file holds the target frame alone
    base = {"video_name": name, "question": f"What colour is the {clip.shape} in the video?", "answer": clip.colour,
            "question_type": "colour", "position": labels.get(seg, f"segment{seg + 1}"), "slot": slot + 1,
            "segment": seg + 1, "size": clip.size, "order": order, "shape": clip.shape,
            "evidence_start": start, "evidence_end": start + 1}
    rows = []
    for form in cfg.forms:
        row = {**base, "question_id": f"{name}-{form}", "task": form}
        if form == "mc":
            rest = [c for c in PALETTE if c != clip.colour and c not in clip.distractor_colours]
            options = [clip.colour, *clip.distractor_colours, str(rest[int(rng.integers(len(rest)))])]
            options = [options[k] for k in rng.permutation(len(options))]
            row.update({f"a{k}": o for k, o in enumerate(options)}, answer_number=options.index(clip.colour))
        rows.append(row)
    return rows


def video_name(clip: ProbeClip, order: str) -> str:
    """The file stem of ``clip`` written in ``order`` (``probe007f``, ``probe007r``; a sweep's
    clip adds its target's segment and slot in forward order, ``probe007f-s2-3``)."""
    name = f"probe{clip.index:03d}{order[0]}"
    return f"{name}-s{clip.segment + 1}-{clip.slot}" if clip.swept else name


def clips_of(data: str | Path) -> dict[str, ProbeClip]:
    """Video name -> :class:`ProbeClip` of a written probe, rebuilt from its manifest's config
    (the design is a pure function of it): what each clip shows, for reading the answers."""
    path = Path(data) / "manifest.json"
    try:
        config = json.loads(path.read_text())["config"]
    except FileNotFoundError:
        raise MLBError(f"no probe manifest at {path} (write one with mlb probe --out {data})") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise MLBError(f"{path} is not a probe manifest (no readable 'config')") from None
    fields = set(ProbeConfig.__dataclass_fields__)
    if set(config) - fields:
        raise MLBError(f"{path}: unknown probe config keys {sorted(set(config) - fields)}")
    cfg = ProbeConfig(**config)
    return {video_name(clip, order): clip for clip in design(cfg) for order in cfg.orders}


def generate_probe(out: str | Path, cfg: ProbeConfig | None = None) -> dict[str, Any]:
    """Write the probe to ``out`` (videos, ``probe.csv``, ``manifest.json``); byte-identical
    for the same config. Returns the manifest."""
    cfg = cfg or ProbeConfig()
    out = Path(out)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    files: dict[str, str] = {}
    for clip in design(cfg):
        frames = render_clip(cfg, clip)
        if cfg.isolated:  # the target frame alone: the same pixels in either order
            frames = [frames[target_frame_of(cfg, clip, "forward")]]
        for order in cfg.orders:
            name = video_name(clip, order)
            path = videos / f"{name}.mp4"
            write_mp4(path, frames if order == "forward" else frames[::-1], cfg.fps)
            files[f"videos/{path.name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
            rows.extend(questions(cfg, clip, order, name))
    csv_path = out / "probe.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in CSV_COLUMNS})
    files["probe.csv"] = hashlib.sha256(csv_path.read_bytes()).hexdigest()
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    cells: dict[str, int] = {}
    for r in rows:
        key = f"{r['position']}/slot{r['slot']}/{r['size']}/{r['order']}/{r['task']}"
        cells[key] = cells.get(key, 0) + 1
    manifest = {"benchmark": "probe", "config": config, "n_videos": len(files) - 1, "n_questions": len(rows),
                "cells": cells, "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
