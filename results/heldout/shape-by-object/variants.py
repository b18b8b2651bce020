"""What in the tower's shape slots the frozen LM misreads (docs/training-record.md, "Shape by the object").

An exploratory record, not part of the package: each variant replaces the committed weights' three
shape slots (a :data:`mlb_core.train.ceiling.ShapeSwap`) and reads 48 held-out one-frame clips
teacher-forced (``ceiling.ideal_accuracy``, raw x1, the seed-0 stream of ``mlb heldout --ideal``).
Run from the repository root: ``python results/heldout/shape-by-object/variants.py NAME...``
(about 2.5 min a variant on one thread); each writes ``NAME.json`` beside this file.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from mlb_core.train import ceiling
from mlb_core.train.vision import SLOT_GROUPS

COLOUR, SHAPE = SLOT_GROUPS["colour"], SLOT_GROUPS["shape"]


def _mass(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(min=0).sum(-1, keepdim=True)  # (T, P, 1)


def _onehot(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(x.argmax(-1), 3).to(x.dtype)  # (T, P, 3)


def _coloured(act: torch.Tensor) -> torch.Tensor:
    return _mass(act[..., COLOUR]) > 0.1  # the tower's own colour slots see an object


def _direction(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(min=0)
    return x / x.sum(-1, keepdim=True).clamp(min=1e-6)


def _softmax_pool(a: torch.Tensor, gain: float = 4.0) -> torch.Tensor:
    """What one stock attention head could pool (lnpool.py): each patch's softmax over the frame's
    patches by the similarity of their saturated colour slots, averaging the rectified shape slots."""
    sat = (4 * a[..., COLOUR].clamp(min=0) - 0.4).clamp(0, 1)  # (T, P, 6)
    weights = torch.softmax(gain * sat @ sat.transpose(-1, -2), -1)  # (T, P, P)
    return weights @ a[..., SHAPE].clamp(min=0)  # (T, P, 3)


def _sharpened(a: torch.Tensor) -> torch.Tensor:
    """The softmax pool sharpened by one fitted GELU unit a shape (sharpen_fit.py, sharpen.json)."""
    from sharpen_fit import sharpen

    fit = json.loads((Path(__file__).parent / "sharpen.json").read_text())
    return sharpen(_softmax_pool(a), _mass(a[..., SHAPE]), fit["a"], fit["b"], fit["c"])


# name -> (act (T, P, 10), target (T, P, 10)) -> shape slots (T, P, 3)
VARIANTS = {
    "own": lambda a, t: a[..., SHAPE],
    "target": lambda a, t: t[..., SHAPE],
    "own-gated-truth": lambda a, t: a[..., SHAPE] * (t[..., COLOUR].sum(-1, keepdim=True) > 0),
    "own-gated-colour": lambda a, t: a[..., SHAPE] * _coloured(a),
    "own-x2": lambda a, t: 2 * a[..., SHAPE],
    "target-mass-own-direction": lambda a, t: _mass(t[..., SHAPE]) * _direction(a[..., SHAPE]),
    "pooled": lambda a, t: ceiling.pool_shape_by_colour(a),
    "pooled-gated-colour": lambda a, t: ceiling.pool_shape_by_colour(a) * _coloured(a),
    "own-onehot-targetmass": lambda a, t: _mass(t[..., SHAPE]) * _onehot(a[..., SHAPE]),
    "pooled-onehot-ownmass": lambda a, t: _mass(a[..., SHAPE]) * _onehot(ceiling.pool_shape_by_colour(a)),
    "pooled-onehot-targetmass": lambda a, t: _mass(t[..., SHAPE]) * _onehot(ceiling.pool_shape_by_colour(a)),
    "softmax-pooled-onehot-ownmass": lambda a, t: _mass(a[..., SHAPE]) * _onehot(_softmax_pool(a)),
    "softmax-pooled-sharpened": lambda a, t: _sharpened(a),
}

if __name__ == "__main__":
    for name in sys.argv[1:] or VARIANTS:
        swap = VARIANTS[name]
        swap.__name__ = name
        result = ceiling.ideal_accuracy(n_clips=48, tokens="tower", swap=swap, shape_target="outline",
                                        layout_names=("raw1x1",))
        row = next(iter(result["layouts"].values()))  # the one layout, raw1x1
        print(f"{name:28s} colour {row['colour']:.3f} shape {row['shape']:.3f} n {row['n']} {result['seconds']:.0f} s")
        (Path(__file__).parent / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
