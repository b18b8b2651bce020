"""Stage-one attention maps behind paper Fig. 1 and Fig. 2, on any VideoLLM.

:func:`attention_scores`: the last query token's attention at the scoring layer over the
visual tokens of one input of T frames (Fig. 1). :func:`attention_bias_maps`: those maps
for many inputs under the three conditions of Fig. 2 (frames in order, reversed, one
frame repeated). The figures' analysis of the maps is in :mod:`mlb_core.study.analysis`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

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
