"""One-frame shape by the object's size, on held-out seed 2 (README, "One frame, on four times as
many fresh clips"; the record's "Small objects").

An exploratory reading, not part of the package, of the answers already in this folder: each
answer's clip is drawn again from its seed (no model runs) for its object's radius and background,
and the shape answers are counted by radius in four bins, and below and from 45 px (about three
patch widths, near the middle of the training's log-uniform radii of 20-110 px, whose geometric mean
is 47 px), with 95% Wilson intervals and Fisher's exact test. `committed.json` holds the answers of
`lead-cosine`, the weights committed when it was run; `pooled-seed0.json` those of the weights
committed now.
Run from the repository root: `python results/heldout/seed2/by_size.py` (seconds).
"""
import json
from collections.abc import Iterator
from pathlib import Path

from scipy.stats import fisher_exact

from mlb_core.study.probe_analysis import wilson
from mlb_core.train import scenes
from mlb_core.train.sight import SEED_OFFSET

HERE = Path(__file__).parent
SPLIT = 45.0  # px of the 336-px frame
BINS = ((20, 30), (30, 45), (45, 70), (70, 111))


def shape_answers(path: Path) -> Iterator[tuple[scenes.ClipSpec, dict]]:
    """Each shape answer of a `mlb heldout` result with its clip, drawn again from its seed."""
    d = json.loads(path.read_text())
    c = d["conditions"]["single_full"]
    for a in c["answers"]:
        if a["kind"] != "shape":
            continue
        seed = (scenes.HELDOUT_SEED_BASE + SEED_OFFSET + d["seed"], c["clip_key"] or 0, a["clip"])
        spec = scenes.sample_clip(seed, n_frames=1, split="heldout", n_objects=1, p_partial=0.0,
                                  background=c["background"])
        assert spec.objects[0].shape == a["truth"], "the clip drawn again is not the one answered"
        yield spec, a


def rows(path: Path) -> list[tuple[float, str, bool]]:
    return [(spec.objects[0].radius, spec.background, bool(a["right"])) for spec, a in shape_answers(path)]


def interval(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k}/{n} ({100 * k / n:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}])"


def main() -> None:
    pooled = {"small": [0, 0], "large": [0, 0]}
    for name in ("committed", "pooled-seed0", "pooled-seed1", "pooled-seed2"):
        r = rows(HERE / f"{name}.json")
        name = "lead-cosine" if name == "committed" else name  # committed.json: the weights committed then
        by_bin = ", ".join(f"{lo}-{hi} px {sum(x[2] for x in r if lo <= x[0] < hi)}/{sum(lo <= x[0] < hi for x in r)}"
                           for lo, hi in BINS)
        small = [x[2] for x in r if x[0] < SPLIT]
        large = [x[2] for x in r if x[0] >= SPLIT]
        p = fisher_exact([[sum(small), len(small) - sum(small)], [sum(large), len(large) - sum(large)]]).pvalue
        print(f"{name:13s} {by_bin}; below {SPLIT:.0f} px {interval(sum(small), len(small))}, "
              f"from {SPLIT:.0f} px {interval(sum(large), len(large))}, Fisher p = {p:.2g}")
        if name.startswith("pooled"):
            pooled["small"][0] += sum(small)
            pooled["small"][1] += len(small)
            pooled["large"][0] += sum(large)
            pooled["large"][1] += len(large)
    (ks, ns), (kl, nl) = pooled["small"], pooled["large"]
    p = fisher_exact([[ks, ns - ks], [kl, nl - kl]]).pvalue
    print(f"pooled's three seeds: below {SPLIT:.0f} px {interval(ks, ns)}, from {SPLIT:.0f} px {interval(kl, nl)}, "
          f"Fisher p = {p:.2g}")


if __name__ == "__main__":
    main()
