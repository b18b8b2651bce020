"""Plotting helpers of the study (seaborn): paper Fig. 1, Fig. 2 and Fig. 4, and saving.

Every figure is saved as PNG and PDF with the plotted data as CSV beside it
(:func:`save_figure`); the data come from :mod:`mlb_core.study.analysis`. Saving is
deterministic (no creation dates in the files), so reruns on the same inputs give the
same bytes.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from mlb_core.study.analysis import CONDITION_LABELS, CONDITIONS, FLOAT_FORMAT

SELECTION_COLOURS = {"global top-k": "#d95f02", "GAPool": "#1b9e77"}
CONDITION_COLOURS = dict(zip(CONDITIONS, ("#4c72b0", "#dd8452", "#55a868"), strict=True))


def setup_style() -> None:
    """One look for every figure of the study."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "pdf.fonttype": 42,
                         "svg.hashsalt": "mlb", "axes.titlesize": 10})


def add_caption(fig: Figure, text: str, width: int = 150, y: float = 0.0) -> None:
    """A wrapped caption under the axes (the figure is saved with a tight bounding box)."""
    fig.text(0.01, y, textwrap.fill(text, width), ha="left", va="top", fontsize=8.5, wrap=True)


def save_figure(fig: Figure, stem: str | Path, data: pd.DataFrame | Mapping[str, pd.DataFrame]) -> list[Path]:
    """Write ``stem.png``, ``stem.pdf`` and the plotted data as ``stem.csv`` (or
    ``stem_<name>.csv`` for several tables). Returns the paths written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(out[0], bbox_inches="tight", metadata={"Software": None})
    fig.savefig(out[1], bbox_inches="tight", metadata={"CreationDate": None, "Producer": None, "Creator": None})
    tables = {"": data} if isinstance(data, pd.DataFrame) else dict(data)
    for name, df in tables.items():
        path = stem.with_name(f"{stem.name}_{name}.csv" if name else f"{stem.name}.csv")
        df.to_csv(path, index=False, float_format=FLOAT_FORMAT)
        out.append(path)
    return out


def square(frame: np.ndarray, size: int = 192) -> np.ndarray:
    """A frame resized to a square, as the vision tower sees it (336 px for CLIP-L/336; 192 px
    is enough for a 2-inch panel and keeps the PDF small)."""
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((size, size), Image.BILINEAR))


def _overlay(ax, frame: np.ndarray, mask: np.ndarray, colour: str) -> None:
    """The frame with unselected tokens darkened and selected ones tinted."""
    h, w = mask.shape
    ax.imshow(square(frame), extent=(0, w, h, 0), interpolation="bilinear")
    rgba = np.zeros((h, w, 4))
    rgba[~mask] = (0, 0, 0, 0.78)
    rgba[mask] = (*matplotlib.colors.to_rgb(colour), 0.35)
    ax.imshow(rgba, extent=(0, w, h, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_fig1(frames: np.ndarray, table: pd.DataFrame, counts: pd.DataFrame, k: int, grid: str,
              title: str, caption: str, frame_labels: Sequence[str] | None = None) -> Figure:
    """Paper Fig. 1: per frame, the tokens kept by global top-k (row 1) and by GAPool
    (row 2), and the number kept per frame (bottom)."""
    setup_style()
    t = frames.shape[0]
    h, w = int(table["row"].max()) + 1, int(table["col"].max()) + 1
    fig = plt.figure(figsize=(2.3 * t, 7.6))
    gs = fig.add_gridspec(3, t, height_ratios=[1, 1, 1.05], hspace=0.38, wspace=0.05)
    rows = (("topk", "global top-k", f"global top-{k}\n(over all frames)"),
            ("gapool", "GAPool", f"GAPool {grid}\n(1 token per cell)"))
    for r, (col, key, label) in enumerate(rows):
        for f in range(t):
            ax = fig.add_subplot(gs[r, f])
            sel = table[table["frame"] == f + 1]
            mask = np.zeros((h, w), dtype=bool)
            mask[sel["row"].to_numpy()[sel[col].to_numpy()], sel["col"].to_numpy()[sel[col].to_numpy()]] = True
            _overlay(ax, frames[f], mask, SELECTION_COLOURS[key])
            n = int(mask.sum())
            name = frame_labels[f] if frame_labels else f"Frame {f + 1}"
            ax.set_title(f"{name}\n{n} tokens kept", fontsize=9)
            if f == 0:
                ax.set_ylabel(label, fontsize=9)
    ax = fig.add_subplot(gs[2, :])
    sns.barplot(data=counts, x="frame", y="tokens", hue="selection", palette=SELECTION_COLOURS, ax=ax)
    ax.set_xticks(range(t))
    ax.set_xticklabels(frame_labels or [f"Frame {f + 1}" for f in range(t)])
    ax.set_xlabel("sampled frame (input order)")
    ax.set_ylabel(f"tokens kept (of {h * w} per frame)")
    for cont in ax.containers:
        ax.bar_label(cont, fontsize=8)
    ax.legend(title="selection", loc="upper left")
    fig.suptitle(title, y=0.995, fontsize=11)
    add_caption(fig, caption, y=0.035)
    return fig


def plot_fig2(maps: pd.DataFrame, shares: pd.DataFrame, title: str, caption: str) -> Figure:
    """Paper Fig. 2: averaged last-query attention maps, one row per condition and one
    column per input position (one colour scale for all), and the per-position shares."""
    setup_style()
    conds = [c for c in CONDITIONS if c in set(maps["condition"])]
    t = int(maps["position"].max())
    h, w = int(maps["row"].max()) + 1, int(maps["col"].max()) + 1
    vmax = float(maps["attention"].max())
    fig = plt.figure(figsize=(2.2 * t + 1.0, 2.25 * len(conds) + 3.4))
    gs = fig.add_gridspec(len(conds) + 1, t + 1, width_ratios=[1] * t + [0.06],
                          height_ratios=[1] * len(conds) + [1.35], hspace=0.42, wspace=0.08)
    mean_share = shares.groupby(["condition", "position"])["share"].mean()
    im = None
    for r, cond in enumerate(conds):
        sub = maps[maps["condition"] == cond]
        for p in range(1, t + 1):
            cell = sub[sub["position"] == p].sort_values(["row", "col"])
            img = cell["attention"].to_numpy().reshape(h, w)
            ax = fig.add_subplot(gs[r, p - 1])
            im = ax.imshow(img, cmap="magma", vmin=0.0, vmax=vmax, interpolation="nearest")
            frame = int(cell["frame"].iloc[0])
            ax.set_title(f"pos {p} (frame {frame}): {mean_share[(cond, p)]:.1%}", fontsize=8.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if p == 1:
                ax.set_ylabel(CONDITION_LABELS.get(cond, cond), fontsize=9)
    cax = fig.add_subplot(gs[: len(conds), t])
    fig.colorbar(im, cax=cax, label="mean attention per token")
    ax = fig.add_subplot(gs[len(conds), :t])
    data = shares.assign(condition=shares["condition"].map(lambda c: CONDITION_LABELS.get(c, c)))
    palette = {CONDITION_LABELS.get(c, c): col for c, col in CONDITION_COLOURS.items()}
    sns.barplot(data=data, x="position", y="share", hue="condition", palette=palette, errorbar="se",
                capsize=0.1, ax=ax)
    ax.axhline(1 / t, color="grey", ls=":", lw=1)
    ax.text(0.5, 1 / t, f"uniform share 1/{t}", va="bottom", ha="center", fontsize=8, color="grey")
    ax.set_xlabel("input position (1 = first in the sequence)")
    ax.set_ylabel("share of visual attention")
    ax.legend(title=None, loc="upper left")
    fig.suptitle(title, y=0.93, fontsize=11)
    add_caption(fig, caption, y=0.045)
    return fig


def plot_fig4(df: pd.DataFrame, metric: str, title: str, caption: str, ylabel: str) -> Figure:
    """Paper Fig. 4: quality against the tokens fed to stage two, one point per GAPool
    grid (labelled), the no-compression result as a red dashed line."""
    setup_style()
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    pts = df[df["compression"]].sort_values("tokens")
    full = df[~df["compression"]]
    if len(full):
        ax.axhline(float(full[metric].iloc[0]), color="red", ls="--", lw=1.5, zorder=1,
                   label=f"no compression ({int(full['tokens'].iloc[0])} tokens)")
    sns.lineplot(data=pts, x="tokens", y=metric, marker="o", markersize=7, ax=ax, color="#1b9e77", zorder=3,
                 label="GAPool (LLaVA-MLB$^G$), one point per grid")
    for _, row in pts.iterrows():
        ax.annotate(f"{row['grid']}", (row["tokens"], row[metric]), textcoords="offset points", xytext=(0, 8),
                    ha="center", fontsize=9, zorder=4)
    ax.set_xscale("log")
    ax.set_xticks(pts["tokens"].tolist())
    ax.set_xticklabels([str(int(t)) for t in pts["tokens"]], fontsize=8.5)
    ax.minorticks_off()
    ax.set_xlabel("# input tokens to stage two (GAPool grid, 5-frame segment)")
    ax.set_ylabel(ylabel)
    lo = min(pts[metric].min(), full[metric].min() if len(full) else np.inf)
    hi = max(pts[metric].max(), full[metric].max() if len(full) else -np.inf)
    pad = max(2.0, 0.15 * (hi - lo)) if metric == "accuracy" else max(0.1, 0.15 * (hi - lo))
    ax.set_ylim(lo - pad, hi + 2 * pad)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title, fontsize=11)
    add_caption(fig, caption, width=125, y=-0.02)
    return fig
