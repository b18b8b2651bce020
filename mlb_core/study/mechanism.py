"""Probe v2 mechanism metrics: what each selection keeps of the evidence, and where stage two
looks, with no answer needed (docs/method.md, "Where the bias bites").

For one probe clip, the *evidence* is the set of patches of the target frame that the target
covers (at least ``min_cover`` of the patch, read from the decoded frame's pixels). Each
selection is applied to an indicator of the evidence instead of the tokens (the same
functions, :func:`~mlb_core.selection.gapool.gapool` and
:func:`~mlb_core.selection.gapool.topk_tokens`, so nothing is re-implemented):

- ``kept``: evidence token-equivalents in the stage-two body (a top-k token counts 1 when it
  is evidence; a pooled cell counts its evidence weight);
- ``enrichment``: ``kept`` over what an attention-blind selection of the same budget keeps
  on average (evidence patches x budget / all tokens): above 1, the attention steers the
  budget towards the evidence; ``mlb-avg`` is 1 by construction;
- ``body_attention`` and ``tail_attention`` (``mlb`` only): stage two's last-query attention
  at the scoring layer on the evidence frame's body tokens and on its tail tokens, as shares
  of the attention on all visual tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mlb_core.backbones.adapter import VideoLLM
from mlb_core.backbones.prompts import render_prompt
from mlb_core.config import MLBParams
from mlb_core.errors import MLBError
from mlb_core.evaluation.benchmarks import load_benchmark, resolve_videos
from mlb_core.evaluation.synthetic import PALETTE
from mlb_core.selection.attention import last_query_attention
from mlb_core.selection.gapool import gapool, gapool_count, topk_tokens, vstail
from mlb_core.selection.scores import StageOneCache
from mlb_core.selection.segattn import split_segments

SELECTIONS = ("segattn-topk", "mlb-gapool", "mlb-avg")


def evidence_mask(frame: np.ndarray, colour: str, grid_hw: tuple[int, int], min_cover: float = 0.25,
                  tolerance: int = 60) -> np.ndarray:
    """(h, w) bool: patches of ``frame`` (H, W, 3) uint8 whose area is at least ``min_cover``
    the target's colour (within ``tolerance`` in summed RGB distance; the frame is cut into
    an h x w grid of equal cells, as the square probe frames are by the vision tower)."""
    h, w = grid_hw
    hit = (np.abs(frame.astype(np.int32) - np.array(PALETTE[colour])).sum(-1) < tolerance).astype(np.float64)
    rows = np.array_split(np.arange(frame.shape[0]), h)
    cols = np.array_split(np.arange(frame.shape[1]), w)
    cover = np.array([[hit[np.ix_(r, c)].mean() for c in cols] for r in rows])  # (h, w)
    return cover >= min_cover


def selection_evidence(indicator: torch.Tensor, scores: torch.Tensor, params: MLBParams) -> dict[str, float]:
    """Evidence token-equivalents each selection keeps of ``indicator`` (T, h, w) in {0, 1},
    given stage-one ``scores`` (T, h, w), segment by segment as SegAttn runs."""
    t, h, w = indicator.shape
    x = indicator[..., None].float()  # (T, h, w, 1): the evidence as a one-dimensional token
    k = params.segment_frames * gapool_count(h, w, params.grid)  # per-segment budget, as segattn-topk
    kept = {"segattn-topk": 0.0, "mlb-gapool": 0.0, "mlb-avg": 0.0}
    seg = params.segment_frames
    for xs, ss in zip(split_segments(x, seg), split_segments(scores[..., None], seg), strict=True):
        ss = ss[..., 0]  # (f, h, w)
        kept["segattn-topk"] += float(topk_tokens(xs, ss, k).sum())
        kept["mlb-gapool"] += float(gapool(xs, ss, params.grid, "weighted").sum())
        kept["mlb-avg"] += float(gapool(xs, None, params.grid, "avg").sum())
    return kept


def mlb_visual(tokens: torch.Tensor, scores: torch.Tensor, params: MLBParams) -> tuple[torch.Tensor, int, int]:
    """The sequence ``mlb`` feeds stage two for ``tokens`` (T, h, w, D) and stage-one ``scores``
    (T, h, w): GAPool body segment by segment in time order, then the VSTail. Returns it
    (T * (body_per + tail_per), D) with the body and tail tokens per frame."""
    t, h, w, _ = tokens.shape
    body_per = gapool_count(h, w, params.grid)
    tail = vstail(tokens, scores, params.tail_grid, params.tail_mode)  # (T * tail_per, D)
    body = torch.cat([gapool(seg, sc, params.grid, params.pool_mode) for seg, sc in
                      zip(split_segments(tokens, params.segment_frames), split_segments(scores, params.segment_frames),
                          strict=True)])
    return torch.cat([body, tail]), body_per, tail.shape[0] // t


def clip_metrics(vlm: VideoLLM, tokens: torch.Tensor, frames: np.ndarray, question: str, colour: str,
                 target_frame: int, params: MLBParams, cache: StageOneCache | None = None) -> dict[str, Any]:
    """The metrics of one clip: ``tokens`` (T, h, w, D) and decoded ``frames`` (T, H, W, 3)."""
    t, h, w, d = tokens.shape
    ev = torch.zeros(t, h, w)
    ev[target_frame] = torch.from_numpy(evidence_mask(frames[target_frame], colour, (h, w)))
    n_ev = float(ev.sum())
    if n_ev == 0:
        raise MLBError(f"no evidence patch found in frame {target_frame} for colour {colour!r}")
    prompt = render_prompt(vlm.family, question)
    scores = (cache or StageOneCache()).scores(vlm, tokens, prompt, params)  # (T, h, w)
    kept = selection_evidence(ev, scores, params)
    budget = t * gapool_count(h, w, params.grid)
    blind = n_ev * budget / (t * h * w)
    out: dict[str, Any] = {"evidence_patches": n_ev}
    for name, value in kept.items():
        out[f"kept[{name}]"] = value
        out[f"enrichment[{name}]"] = value / blind
    out["kept_share[segattn-topk]"] = kept["segattn-topk"] / n_ev
    # stage two of mlb: attention on the evidence frame's body and tail tokens
    visual, body_per, tail_per = mlb_visual(tokens, scores, params)
    embeds, vis = vlm.build_inputs(prompt, visual)
    att = last_query_attention(vlm.language_model, embeds, params.score_layer)[0, vis]  # (N,)
    att = att / att.sum()
    n_body = t * body_per
    first_tail = n_body + target_frame * tail_per
    out["body_attention[mlb]"] = float(att[target_frame * body_per:(target_frame + 1) * body_per].sum())
    out["tail_attention[mlb]"] = float(att[first_tail:first_tail + tail_per].sum())
    out["uniform_frame_share"] = 1.0 / t
    return out


def probe_mechanism(vlm: VideoLLM, data: str | Path, params: MLBParams, limit: int | None = None,
                    progress: bool = True) -> pd.DataFrame:
    """:func:`clip_metrics` for every open-ended question of the probe at ``data`` (one row per
    clip), with its slot, segment, frame (1-based, in the file), size and order."""
    from tqdm.auto import tqdm

    from mlb_core.pipeline import encode_video

    items = [it for it in load_benchmark("probe", data) if it.task == "open"][: limit or None]
    videos, _ = resolve_videos(items, Path(data) / "videos")
    rows = []
    for it in tqdm(items, desc="probe mechanism", disable=not progress):
        feats = encode_video(vlm, videos[it.video], params.n_frames)
        if feats.frames is None or len(feats.frames) != params.n_frames:
            raise MLBError(f"{it.video}: expected {params.n_frames} decoded frames")
        m = clip_metrics(vlm, feats.tokens, feats.frames, it.question, it.answer, it.extra["evidence_start"], params)
        rows.append({"qid": it.qid, "slot": it.extra["slot"], "position": it.position,
                     "frame": int(it.extra["evidence_start"]) + 1, "size": it.extra.get("size"),
                     "order": it.extra.get("order"), **m})
    return pd.DataFrame(rows)


def summarise_mechanism(df: pd.DataFrame, by: Sequence[str] = ("slot",)) -> pd.DataFrame:
    """Means of every metric per group (forward clips), with the clip count ``n``."""
    fwd = df[df["order"].fillna("forward") == "forward"]
    metrics = [c for c in df.columns if "[" in c or c == "uniform_frame_share"]
    out = fwd.groupby(list(by))[metrics].mean().reset_index()
    out.insert(len(by), "n", fwd.groupby(list(by)).size().values)
    return out


def plot_mechanism(by_slot: pd.DataFrame, by_segment: pd.DataFrame, stem: str | Path, caption: str) -> list[Path]:
    """Left: evidence enrichment of each selection by slot (1 = attention-blind). Right: stage
    two's attention on the evidence frame's body and tail tokens (``mlb``) by segment, against
    a uniform share per frame."""
    import matplotlib.pyplot as plt

    from mlb_core.study.plots import add_caption, save_figure, setup_style
    from mlb_core.study.probe_analysis import METHOD_COLOURS

    setup_style()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in SELECTIONS:
        a.plot(by_slot["slot"], by_slot[f"enrichment[{name}]"], marker="o", label=name, color=METHOD_COLOURS.get(name))
    a.axhline(1.0, color="grey", lw=0.8, ls="--")
    a.set_xlabel("slot of the evidence frame in its segment")
    a.set_ylabel("evidence kept / attention-blind")
    a.set_xticks(sorted(by_slot["slot"].unique()))
    a.legend(fontsize=8)
    order = [p for p in ("first", "middle", "last") if p in set(by_segment["position"])]
    seg = by_segment.set_index("position").reindex(order)
    x = np.arange(len(order))
    b.bar(x - 0.2, seg["body_attention[mlb]"], 0.4, label="body tokens of the evidence frame", color="#7570b3")
    b.bar(x + 0.2, seg["tail_attention[mlb]"], 0.4, label="tail tokens of the evidence frame", color="#e6ab02")
    b.axhline(float(seg["uniform_frame_share"].iloc[0]), color="grey", lw=0.8, ls="--", label="1 / frames")
    b.set_xticks(x, order)
    b.set_xlabel("segment of the evidence frame")
    b.set_ylabel("share of stage-two attention (mlb)")
    b.legend(fontsize=8)
    add_caption(fig, caption, y=-0.02)
    paths = save_figure(fig, stem, {"slot": by_slot, "segment": by_segment})
    plt.close(fig)
    return paths
