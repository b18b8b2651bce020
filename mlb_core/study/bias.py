"""Stage-one attention maps behind paper Fig. 1 and Fig. 2, on any VideoLLM.

:func:`attention_scores`: the last query token's attention at the scoring layer over the
visual tokens of one input of T frames (Fig. 1). :func:`attention_bias_maps`: those maps
for many inputs under the three conditions of Fig. 2 (frames in order, reversed, one
frame repeated). :func:`save_maps` / :func:`load_maps`: the maps file the Fig. 2 stages pass
on (``fig2_maps`` writes it, ``fig2`` reads it). The figures' analysis of the maps is in
:mod:`mlb_core.study.analysis`.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mlb_core.config import MLBParams
from mlb_core.errors import MLBError

if TYPE_CHECKING:
    from mlb_core.backbones.adapter import VideoLLM

CONDITIONS = ("in_order", "reversed", "repeated")


def frame_order(condition: str, n: int, repeat_frame: int | None = None) -> np.ndarray:
    """Which sampled frame sits at each of the ``n`` input positions (Fig. 2):
    ``in_order`` 0..n-1, ``reversed`` n-1..0, ``repeated`` one frame (default the middle
    one) ``n`` times."""
    if condition == "in_order":
        return np.arange(n)
    if condition == "reversed":
        return np.arange(n)[::-1].copy()
    if condition == "repeated":
        f = n // 2 if repeat_frame is None else repeat_frame
        if not 0 <= f < n:
            raise MLBError(f"repeat_frame must be in [0, {n}), got {f}")
        return np.full(n, f)
    raise MLBError(f"unknown condition {condition!r}; use one of {', '.join(CONDITIONS)}")


def attention_scores(vlm: VideoLLM, tokens: torch.Tensor, question: str, score_layer: int) -> np.ndarray:
    """Last-query attention at ``score_layer`` over the visual tokens of *one* input of T
    frames (T, h, w, D), as in paper Fig. 1/2 -> (T, h, w) float32 (the visual part of the
    softmax over the whole prompt; it sums to less than 1)."""
    from mlb_core.backbones.prompts import render_prompt
    from mlb_core.selection.segattn import stage_one

    t = tokens.shape[0]
    params = MLBParams(n_frames=t, segment_frames=t, score_layer=score_layer)
    prompt = render_prompt(vlm.family, question)
    return stage_one(vlm, tokens, prompt, params).float().cpu().numpy()


def attention_bias_maps(
    vlm: VideoLLM,
    videos: Sequence[str | Path],
    questions: Sequence[str],
    n_frames: int = 5,
    windows: int = 1,
    score_layer: int = 2,
    repeat_frame: int | None = None,
    conditions: Sequence[str] = CONDITIONS,
    progress: bool = True,
    loader: Callable[[str | Path, int], np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """Stage-one maps of every input under every condition of paper Fig. 2.

    Each video gives ``windows`` inputs of ``n_frames`` consecutive frames among
    ``windows * n_frames`` uniformly sampled ones; every input is asked every question.
    ``in_order`` feeds the frames as sampled, ``reversed`` backwards, ``repeated`` one frame
    (``repeat_frame``, default the middle one) ``n_frames`` times.

    Returns:
        ``(maps, orders, labels)``: maps[condition] is (N, n_frames, h, w) float32 with
        N = len(videos) * windows * len(questions); orders[condition] (n_frames,) the frame
        shown at each position; labels the N inputs (``video#window|question``).
    """
    from tqdm.auto import tqdm

    from mlb_core.video import load_video

    load = loader or (lambda v, n: load_video(v, n)[0])
    orders = {c: frame_order(c, n_frames, repeat_frame) for c in conditions}
    maps: dict[str, list[np.ndarray]] = {c: [] for c in conditions}
    labels: list[str] = []
    total = len(videos) * windows * len(questions) * len(conditions)
    bar = tqdm(total=total, desc="stage one", disable=not progress)
    for video in videos:
        frames = load(video, windows * n_frames)  # (W*n, H, W, 3)
        tokens = vlm.encode_frames(frames)  # (W*n, h, w, D)
        for win in range(windows):
            seg = tokens[win * n_frames:(win + 1) * n_frames]  # (n, h, w, D)
            for q in questions:
                labels.append(f"{Path(str(video)).name}#{win + 1}|{q}")
                for c in conditions:
                    order = torch.as_tensor(orders[c])
                    maps[c].append(attention_scores(vlm, seg[order], q, score_layer))
                    bar.update()
    bar.close()
    return {c: np.stack(m) for c, m in maps.items()}, orders, labels


def benchmark_inputs(benchmark: str, data: str | Path, videos: str | Path | None,
                     limit: int) -> tuple[list[Path], list[str]]:
    """Paper mode of Fig. 2: the first ``limit`` questions of a benchmark (e.g. ANet-QA),
    as ``(video paths, questions)`` pairs (one question per video)."""
    from mlb_core.evaluation.benchmarks import default_video_root, load_benchmark, resolve_videos

    items = load_benchmark(benchmark, data, limit=limit)
    found, _ = resolve_videos(items, videos or default_video_root(benchmark, data))
    return [found[it.video] for it in items], [it.question for it in items]


# ---- the maps file of the Fig. 2 stages --------------------------------------------------------
@dataclass(frozen=True)
class AttentionMaps:
    """What :func:`attention_bias_maps` computed, as stored by :func:`save_maps`: maps[condition]
    (N, T, h, w) float32, orders[condition] (T,) int, the N input labels and the run's metadata."""

    maps: dict[str, np.ndarray]
    orders: dict[str, np.ndarray]
    labels: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


def _npz_member(z: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))  # no timestamp: same bytes on rerun
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    z.writestr(info, buf.getvalue())


def save_maps(path: str | Path, maps: Mapping[str, np.ndarray], orders: Mapping[str, np.ndarray],
              labels: Sequence[str], meta: Mapping[str, Any] | None = None) -> list[Path]:
    """Write the maps of every condition as ``path`` (an ``.npz`` readable by ``np.load``: arrays
    ``maps_<condition>`` float32, ``order_<condition>`` and ``labels``) and ``meta`` as JSON
    beside it (``path`` with the suffix ``.json``). Byte-stable: the same maps give the same
    files. Returns the two paths."""
    path = Path(path)
    unknown = set(maps) - set(CONDITIONS)
    if unknown or not maps:
        raise MLBError(f"maps must be keyed by conditions among {', '.join(CONDITIONS)}, got {sorted(maps)}")
    if set(orders) != set(maps):
        raise MLBError("one frame order per condition of the maps is needed")
    n = {np.shape(m)[0] for m in maps.values()}
    if n != {len(labels)}:
        raise MLBError(f"{len(labels)} labels for maps of {sorted(n)} inputs")
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for c in sorted(maps, key=CONDITIONS.index):
            _npz_member(z, f"maps_{c}", np.asarray(maps[c], dtype=np.float32))
            _npz_member(z, f"order_{c}", np.asarray(orders[c], dtype=np.int64))
        _npz_member(z, "labels", np.array([str(s) for s in labels], dtype=str))
    meta_path = path.with_suffix(".json")
    meta_path.write_text(json.dumps(dict(meta or {}), indent=1) + "\n")
    return [path, meta_path]


def load_maps(path: str | Path) -> AttentionMaps:
    """The maps, orders, labels and metadata written by :func:`save_maps` (conditions in the
    order of :data:`CONDITIONS`; the metadata empty if the JSON file is absent)."""
    path = Path(path)
    if not path.is_file():
        raise MLBError(f"no attention maps at {path}")
    with np.load(path, allow_pickle=False) as z:
        maps = {c: z[f"maps_{c}"] for c in CONDITIONS if f"maps_{c}" in z.files}
        if not maps:
            raise MLBError(f"{path} holds no maps_<condition> arrays")
        orders = {c: z[f"order_{c}"] for c in maps}
        labels = [str(s) for s in z["labels"]]
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return AttentionMaps(maps, orders, labels, meta)
