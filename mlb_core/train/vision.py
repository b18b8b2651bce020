"""Train the embedded default's vision tower and projector through its frozen language model.

The embedded checkpoint (:mod:`mlb_core.embedded`) pairs the real SmolLM2-135M-Instruct
with a random CLIP vision tower and projector. :func:`train_vision` teaches those two to
show the LM coloured shapes, LLaVA style (the loss is the frozen LM's next-token loss on
the answer), on every token layout the project's methods produce
(:mod:`mlb_core.train.layouts`). LM-loss steps are expensive on a CPU (about 0.45 GFLOP
per token, forward and backward), so the recipe has three stages:

1. **codebook** (LM loss, no pixels): learn ten vectors in the LM's embedding space, one
   per colour, one per shape and one background vector, initialised from the LM's own
   word embeddings (" red", " circle", ...; background: 0.1 x " the"). A patch's ideal
   token is ``sum_k cover_k * (colour_k + shape_k) + (1 - sum_k cover_k) * background``
   (``cover_k``: the fraction of the patch covered by object k). Idealised clips made of
   these tokens are laid out in random layouts, with a length curriculum from 60 to
   600 tokens, and the vectors are trained so that the frozen LM answers correctly (the
   answer's loss plus ``key_weight`` times the loss at its colour or shape word: the rest
   of the answer is predictable from the question). Since pooling is linear, a pooled cell
   of the ideal tokens is the same mixture with its mean coverage: the codebook is learnt
   for every layout at once. The LM's own word embeddings are not enough: fed " red" on the
   object's patches the frozen LM names the colour about a third of the time (docs/training-record.md,
   "What the frozen LM can read"); the learnt vectors are what it reads.
2. **regress** (no LM): the codebook is written into the projector's last layer
   (:func:`install_codebook`: its first ten input units are the ten vectors), so a patch
   token is ``sum_k slot_k * vector_k`` with ``slot`` the ten activations after the
   projector's GELU. The tower and the projector's first layer regress every patch's slots
   onto how much of it each colour, each shape and the background cover
   (:func:`slot_targets`; MSE, object patches weighted up): a small per-patch colour and
   shape head, trained without the LM. Cheap: no LM.
3. **finetune** (LM loss, end to end): rendered clips -> tower -> projector -> random
   layout -> frozen LM, answer loss plus the stage-2 slot loss as an anchor. The codebook
   in the projector's last layer is trained too (``lr_codebook_finetune``), now on the
   tower's real slots rather than ideal ones: the tower's slots are soft (a held-out
   object's patches carry about 0.6 of shape and 1.2 of colour where the ideal is 1 and 1),
   and the vectors learnt on ideal tokens are read less well from them (docs/training-record.md,
   "Reading the tower's real output"). ``lr_codebook_finetune=0`` keeps it fixed, as the first recipe did.

Every stage's length is planned from ``minutes_budget`` with a fixed cost model (not by
the clock), so a rerun with the same arguments repeats the same steps and, with the same
thread count, gives the same weights.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import branches, layouts, scenes
from .card import CURVE_WINDOW, model_card
from .pool import N_POOL_RESERVED, SHARPENINGS, build_pool, mark_patches
from .readout import gelu_inverse, learn_readout, slots_of
from .saturate import clamp_pair, effective_slots, fit_saturation, saturate_slots, slot_gains
from .tower_init import (
    N_RESERVED,
    clip_parts,
    colour_units,
    edge_energy_init,
    edge_rows,
    n_colour_rows,
    structured_init,
)

# the projector's slot units by group (slot order: colours, shapes, background): what a recipe's
# ``saturate`` clamps and ``mlb heldout --ideal-swap`` sets to its targets
_N_COLOURS, _N_SHAPES = len(scenes.COLOURS), len(scenes.SHAPES)
SLOT_GROUPS: dict[str, slice] = {"colour": slice(0, _N_COLOURS),
                                 "shape": slice(_N_COLOURS, _N_COLOURS + _N_SHAPES),
                                 "background": slice(_N_COLOURS + _N_SHAPES, None),
                                 "all": slice(None)}


VARIED_IN = ("all", "readout")  # where a recipe's clips drawn another way go (Recipe.varied_in)
POOLS = ("none", "shape")  # Recipe.pool: what the tower's later layers pool (mlb_core/train/pool.py)
SCHEDULES = ("constant", "cosine")  # the learning-rate schedules a stage may follow (:func:`lr_factor`)


def lr_factor(step: int, frac: float, schedule: str) -> float:
    """A stage's learning rate as a fraction of its base rate at 0-based ``step``, ``frac`` of the
    way through the stage (steps done over planned steps, or budget spent over budget): 20 linear
    warm-up steps, then ``"constant"`` or a ``"cosine"`` decay to 0 at ``frac`` = 1."""
    decay = 0.5 * (1 + math.cos(math.pi * frac)) if schedule == "cosine" else 1.0
    return min(1.0, (step + 1) / 20) * decay


def schedule_codebook(group: dict[str, Any], base: float, step: int, frac: float, schedule: str) -> None:
    """Set an optimiser group's learning rate for the codebook's ``schedule`` in an LM stage
    (``Recipe.codebook_schedule``): ``base * lr_factor(step, frac, schedule)``; ``"constant"``
    leaves the group as built, the arithmetic of every recipe before ``lead-cosine``."""
    if schedule != "constant":
        group["lr"] = base * lr_factor(step, frac, schedule)


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of :func:`train_vision` (all recorded in the model card).

    ``*_share``: fractions of the budget per stage; ``key_weight``: extra weight of the
    cross-entropy at the answer's key token (the colour or shape word, or the option letter),
    which carries what the picture says (the rest of the answer is predictable from the
    question); ``lead_weight``: extra weight of the cross-entropy at the answer's token just before
    the key (" a" in " the red object is a circle."), where free answers in long layouts leave the
    template (:func:`mlb_core.train.branches.key_terms`; 0 in every recipe before ``learnt-lead``);
    ``sec_per_token``/``sec_per_token2``:
    the cost model of one LM forward+backward (seconds per token and per token squared,
    one thread), ``thread_speedup``: speed-up per doubling of threads; ``sec_per_frame``:
    one tower+projector forward+backward per frame (one thread, measured); ``tower_init``:
    ``"structured"`` (:mod:`mlb_core.train.tower_init`) or ``"random"`` (the checkpoint's own);
    ``regress_schedule``: stage 2's learning rate after 20 warm-up steps, ``"constant"`` or
    ``"cosine"`` (decaying to 0); ``codebook_schedule``: the codebook's learning rate in the LM
    stages (stage 1's ``lr_codebook``, stage 3's ``lr_codebook_finetune``), ``"constant"`` as every
    recipe before ``lead-cosine``, or ``"cosine"``: 20 warm-up steps, then a cosine decay to 0 over
    the stage's planned budget (:func:`lr_factor`; docs/training-record.md, "A settled codebook");
    ``shape_weight``: weight of stage 2's image-level shape loss (a linear head on the tower's
    pooled CLS output, single-object frames; the head is discarded after training);
    ``lr_codebook_finetune``: stage 3's learning rate of the codebook columns of the
    projector's last layer (0: they stay fixed);
    ``shape_target``: where a patch carries its object's shape, ``"coverage"`` (on every
    covered patch, weighted by the coverage) or ``"outline"`` (only on the outline,
    :func:`outline_weight`: a patch's own pixels show an object's shape only where its edge
    crosses it); ``outline_fit_frames``: with ``tower_init="edges"``, the frames of the
    closed-form slot read-out (:func:`fit_slot_readout`), ``outline_ridge`` its ridge;
    ``train_tower``: whether stages 2 and 3 train the tower and the projector's first layer
    (False: stage 2 is skipped and stage 3 trains the codebook alone, on the tower's real slots;
    gradient steps undo a closed-form read-out within 100 steps, docs/training-record.md "Shape from the outline");
    ``colour_units``: with ``tower_init="edges"``, the first layer's free MLP units become random
    features of the patch's colour (:func:`mlb_core.train.tower_init.colour_units`, pre-activation
    spread ``colour_unit_gain``) before the read-out is fitted; ``inverse_gelu``: the read-out is
    fitted to ``GELU^-1`` of the slot targets, so that the projector's GELU gives the targets back
    rather than shrinking them (docs/training-record.md, "Where the one-frame misses sit"); ``p_long``: the
    probability that a stage-3 step draws a long layout, ``long_min_tokens`` to ``long_max_tokens``
    tokens (:func:`mlb_core.train.layouts.sample_long_layout`), instead of one under the
    curriculum's cap (0: none, as every recipe before ``long``; docs/training-record.md, "A recipe with long layouts");
    ``saturate``: after stage 3, which slot units become clamps (:mod:`mlb_core.train.saturate`):
    ``"none"`` or a key of :data:`SLOT_GROUPS` (``"colour"``: the six colour slots; ``"all"``),
    fitted on ``saturate_frames`` training frames, pair gain ``saturate_gain``
    (docs/training-record.md, "Saturated slots");
    ``branches``: how many different questions a stage-3 step asks about its clip, all sharing one
    pass over the prefix and the visual tokens (:mod:`mlb_core.train.branches`; 1: one question, as
    every recipe before ``long-branch``; docs/training-record.md, "Branched questions");
    ``p_partial``: the probability that an object of a training clip of several frames is on
    screen in a contiguous span only, ``span`` how that span's length is drawn
    (:data:`mlb_core.train.scenes.SPANS`: ``"uniform"`` as every recipe before ``long-sparse``,
    ``"loguniform"``: short spans as common as long ones; docs/training-record.md, "An object in one frame");
    ``greys``: a fourth background kind, achromatic (a plain grey or a grey gradient, levels 0-255),
    drawn as often as each of the other three, in every stage (False: the three kinds of every
    recipe before ``long-grey``; docs/training-record.md, "An object in one frame");
    ``p_varied``: the probability that a training clip is drawn another way, in every stage:
    anti-aliased edges and each object's colour drawn from its name's range rather than the
    palette's one value (:func:`mlb_core.train.scenes.vary_drawing`; 0 in every recipe before
    ``lead-range``; docs/training-record.md, "Colour names, not colour values"); ``varied_in``:
    where those clips are drawn, ``"all"`` (every stage, as ``lead-range``) or ``"readout"`` (only the
    frames of the slot read-out's fit, stage 2a, no LM; both LM stages draw every clip in the
    palette's values, the same stream as with ``p_varied`` 0; docs/training-record.md, "The range in
    the read-out alone");
    ``readout``: with ``tower_init="edges"``, how the slot read-out is fitted: ``"ridge"`` (closed
    form, linear in the first layer's MLP units, as every recipe before ``learnt``) or
    ``"learnt"`` (the first layer's free MLP units and the read-out trained with Adam on the slots
    after the projector's GELU, :mod:`mlb_core.train.readout`; ``readout_steps`` steps from
    ``readout_lr``, on ``outline_fit_frames`` frames; docs/training-record.md, "A learnt read-out");
    ``reserved``: with ``tower_init="edges"``, how many residual dimensions the first layer keeps free
    (16 in every recipe before ``pooled``);
    ``pool``: ``"none"`` or ``"shape"``: after the read-out, the tower's second layer saturates the
    colour slots and a third layer pools the shape slots over each object in one attention head of
    gain ``pool_gain`` (:mod:`mlb_core.train.pool`, clamps of gain ``pool_clamp_gain`` fitted on
    ``saturate_frames`` frames), then sharpens them, ``pool_sharpen``: ``"onehot"`` (closed form:
    one-hot on the pooled argmax, scaled by the patch's own shape mass) or ``"learnt"`` (the third
    layer's MLP fitted like the read-out, ``readout_steps`` Adam steps from ``pool_lr``, on
    ``outline_fit_frames`` frames); needs the learnt read-out, no tower training, no saturated
    projector, ``feature_layer=-1`` and ``reserved >= 30`` (docs/training-record.md, "A tower that pools shape").
    """

    codebook_share: float = 0.30
    regress_share: float = 0.40
    finetune_share: float = 0.30
    lr_codebook: float = 1e-2
    lr_regress: float = 1e-3
    lr_finetune: float = 1e-4
    lr_codebook_finetune: float = 3e-3
    codebook_min_tokens: int = 60
    codebook_max_tokens: int = 600
    finetune_max_tokens: int = 460
    key_weight: float = 1.0
    lead_weight: float = 0.0
    regress_batch: int = 8
    object_weight: float = 4.0
    anchor_weight: float = 0.5
    p_mc: float = 0.25
    p_two_objects: float = 0.2
    p_partial: float = 0.3
    feature_layer: int = -2
    tower_init: str = "random"
    regress_schedule: str = "cosine"
    codebook_schedule: str = "constant"
    shape_weight: float = 0.0
    shape_target: str = "coverage"
    outline_fit_frames: int = 300
    outline_ridge: float = 1.0
    train_tower: bool = True
    colour_units: bool = False
    colour_unit_gain: float = 3.0
    inverse_gelu: bool = False
    p_long: float = 0.0
    long_min_tokens: int = 2000
    long_max_tokens: int = 4000
    saturate: str = "none"
    saturate_frames: int = 320
    saturate_gain: float = 4.0
    branches: int = 1
    span: str = "uniform"
    greys: bool = False
    p_varied: float = 0.0
    varied_in: str = "all"
    readout: str = "ridge"
    readout_steps: int = 3000
    readout_lr: float = 1e-3
    reserved: int = N_RESERVED
    pool: str = "none"
    pool_gain: float = 8.0
    pool_clamp_gain: float = 4.0
    pool_lr: float = 1e-4
    pool_sharpen: str = "onehot"
    sec_per_token: float = 1.3e-2
    sec_per_token2: float = 3.3e-6
    sec_per_frame: float = 0.19
    thread_speedup: float = 1.7

    def __post_init__(self) -> None:
        if self.tower_init not in ("structured", "random", "edges"):
            raise ValueError(f"tower_init must be 'structured', 'edges' or 'random', not {self.tower_init!r}")
        if self.shape_target not in ("coverage", "outline"):
            raise ValueError(f"shape_target must be 'coverage' or 'outline', not {self.shape_target!r}")
        if not self.train_tower and not (self.tower_init == "edges" and self.lr_codebook_finetune > 0):
            raise ValueError("train_tower=False needs tower_init='edges' (a fitted read-out) and "
                             "lr_codebook_finetune > 0 (something for stage 3 to train)")
        if (self.colour_units or self.inverse_gelu) and self.tower_init != "edges":
            raise ValueError("colour_units and inverse_gelu change the closed-form read-out: "
                             "they need tower_init='edges'")
        if not 0.0 <= self.p_long < 1.0:
            raise ValueError(f"p_long must be in [0, 1), not {self.p_long}")
        if self.p_long and not (0 < self.long_min_tokens <= self.long_max_tokens
                                and layouts.frames_in(576, self.long_min_tokens, 576 * layouts.MAX_FRAMES)):
            raise ValueError(f"long_min_tokens..long_max_tokens ({self.long_min_tokens}..{self.long_max_tokens}) "
                             "must be a range that some layout reaches")
        if self.saturate != "none" and self.saturate not in SLOT_GROUPS:
            raise ValueError(f"saturate must be one of 'none', {', '.join(map(repr, SLOT_GROUPS))}, "
                             f"not {self.saturate!r}")
        if self.saturate != "none" and not (self.saturate_frames > 0 and self.saturate_gain > 0):
            raise ValueError("saturate needs saturate_frames > 0 and saturate_gain > 0")
        if self.branches < 1:
            raise ValueError(f"branches must be at least 1 (questions a stage-3 step asks), not {self.branches}")
        if self.span not in scenes.SPANS:
            raise ValueError(f"span must be one of {', '.join(scenes.SPANS)}, not {self.span!r}")
        if not 0.0 <= self.p_partial <= 1.0:
            raise ValueError(f"p_partial must be in [0, 1], not {self.p_partial}")
        if not 0.0 <= self.p_varied <= 1.0:
            raise ValueError(f"p_varied must be in [0, 1], not {self.p_varied}")
        if self.varied_in not in VARIED_IN:
            raise ValueError(f"varied_in must be one of {', '.join(map(repr, VARIED_IN))}, not {self.varied_in!r}")
        if self.key_weight < 0 or self.lead_weight < 0:
            raise ValueError(f"key_weight and lead_weight must be >= 0, not {self.key_weight} and {self.lead_weight}")
        if self.readout not in ("ridge", "learnt"):
            raise ValueError(f"readout must be 'ridge' or 'learnt', not {self.readout!r}")
        if self.readout == "learnt" and (self.tower_init != "edges" or self.colour_units or self.inverse_gelu):
            raise ValueError("readout='learnt' fits the edge tower's free MLP units itself: it needs "
                             "tower_init='edges', and neither colour_units nor inverse_gelu")
        if self.readout == "learnt" and not (self.readout_steps > 0 and self.readout_lr > 0):
            raise ValueError("readout='learnt' needs readout_steps > 0 and readout_lr > 0")
        if self.reserved < _N_COLOURS + _N_SHAPES + 1:
            raise ValueError(f"reserved must be at least the {_N_COLOURS + _N_SHAPES + 1} slots, not {self.reserved}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(map(repr, POOLS))}, not {self.pool!r}")
        if self.pool != "none" and not (self.readout == "learnt" and not self.train_tower
                                        and self.saturate == "none" and self.feature_layer == -1
                                        and self.reserved >= N_POOL_RESERVED):
            raise ValueError(f"pool={self.pool!r} builds two layers after a learnt read-out: it needs "
                             f"readout='learnt', train_tower=False, saturate='none', feature_layer=-1 "
                             f"and reserved >= {N_POOL_RESERVED}")
        if self.pool_sharpen not in SHARPENINGS:
            raise ValueError(f"pool_sharpen must be one of {', '.join(map(repr, SHARPENINGS))}, "
                             f"not {self.pool_sharpen!r}")
        if self.pool != "none" and not (self.pool_gain > 0 and self.pool_clamp_gain > 0):
            raise ValueError("pool needs pool_gain > 0 and pool_clamp_gain > 0")
        for name in ("regress_schedule", "codebook_schedule"):
            if getattr(self, name) not in SCHEDULES:
                raise ValueError(f"{name} must be 'constant' or 'cosine', not {getattr(self, name)!r}")


# What a field's absence in an older training log means: the value that reproduces the code
# from before the field existed (the other fields' defaults already do).
_BEFORE_FIELD: dict[str, Any] = {"lr_codebook_finetune": 0.0}


def recipe_from_log(fields: dict[str, Any]) -> Recipe:
    """The :class:`Recipe` a training log records (``train_log.json``'s ``summary.recipe``)."""
    return Recipe(**{**_BEFORE_FIELD, **fields})


_FIRST = Recipe(codebook_share=0.35, regress_share=0.45, finetune_share=0.20, lr_codebook_finetune=0.0)
# the shape on the outline: an edge-energy first layer (tower_init "edges"), every slot read out
# in closed form, outline shape targets and codebook, no gradient step on the tower; the LM time
# goes to the codebook, on ideal then on the tower's real tokens (docs/training-record.md, "Shape from the outline")
_OUTLINE = Recipe(tower_init="edges", shape_target="outline", train_tower=False,
                  codebook_share=0.4, regress_share=0.0, finetune_share=0.6)
RECIPES: dict[str, Recipe] = {
    # the weights committed 2026-12-03 to 2026-12-04 (results/train/outline-committed/)
    "outline": _OUTLINE,
    # the weights committed until 2026-12-03: a random tower trained by slot regression on
    # coverage targets, the codebook trained in stage 3 (results/train/coverage/)
    "coverage": Recipe(),
    # the weights committed until 2026-12-02: the codebook fixed in stage 3, which was shorter
    # (results/train/first/)
    "first": _FIRST,
    # the first recipe with a structured tower init, feature layer -1, an image-level shape loss,
    # constant lr 5e-4 and the cost model's frame cost measured on this CPU (about 1,270
    # regression steps in 27 minutes instead of 815): the tower reads shape better, the answers
    # do not (docs/training-record.md, "The frames teach shape"; results/train/structured/)
    "structured": replace(_FIRST, lr_regress=5e-4, feature_layer=-1, tower_init="structured",
                          regress_schedule="constant", shape_weight=1.0, sec_per_frame=0.122),
    # the outline recipe with colour units in the tower's first layer and the read-out fitted
    # through the projector's GELU: tried 2026-12-03 and not adopted (through the pipeline colour
    # as the committed weights, shape worse; docs/training-record.md, "Where the one-frame misses sit";
    # results/train/colour-units/)
    "colour-units": replace(_OUTLINE, colour_units=True, inverse_gelu=True),
    # the outline recipe with long layouts in stage 3: 30% of its steps draw 2,000-4,000 tokens
    # (every family and cell that reaches them), stage 1 shorter to make room; cost model
    # re-measured on this CPU at two threads (docs/training-record.md, "A recipe with long layouts")
    "long": replace(_OUTLINE, codebook_share=0.2, finetune_share=0.8, p_long=0.3,
                    sec_per_token=1.05e-2, sec_per_token2=1.34e-6, sec_per_frame=0.17),
}
# the same with stage 1 as long as the committed recipe's (about 290 steps), run on a 30-minute
# plan: "long" cost one-frame colour (docs/training-record.md, "A recipe with long layouts")
RECIPES["long-30"] = replace(RECIPES["long"], codebook_share=0.3, finetune_share=0.7)
# long-30 with four questions a stage-3 clip, asked in branches that share one pass over its
# visual tokens: about four times the questions on long layouts for the same plan, and more on
# short ones (docs/training-record.md, "Branched questions"; results/train/long-branch/)
RECIPES["long-branch"] = replace(RECIPES["long-30"], branches=4)
# long-branch with objects on screen in part of the clip half the time (not 30%) and the span's
# length log-uniform (not uniform), so that an object in one frame of many, the case of probe v2
# that long-branch answers "yellow" to, is common in training; every layout alike (docs/training-record.md,
# "An object in one frame"; results/train/long-sparse/)
RECIPES["long-sparse"] = replace(RECIPES["long-branch"], p_partial=0.5, span="loguniform")
# long-branch with a fourth background kind, achromatic: greys near the image processor's mean
# make the tower's first layer see little but its position embedding, and the closed-form read-out,
# fitted on few such patches, reads a band of probe v2's grey gradient as weak yellow (docs/training-record.md,
# "An object in one frame"; results/train/long-grey/)
RECIPES["long-grey"] = replace(RECIPES["long-branch"], greys=True)
# long-branch with the slot read-out learnt rather than fitted in closed form: the first layer's
# free MLP units and the read-out trained with Adam on the slots after the projector's GELU, on
# 1,200 single training frames (mlb_core/train/readout.py); no LM, no method's selection (docs/training-record.md,
# "A learnt read-out"; results/train/learnt/)
RECIPES["learnt"] = replace(RECIPES["long-branch"], readout="learnt", outline_fit_frames=1200, readout_steps=3000)
# learnt with the answer's word before the key weighted like the key (lead_weight): in long
# layouts the committed weights' free answers say "the red object is the red object", naming no
# shape, though teacher-forced at the shape word they read it (docs/training-record.md, "The shape is
# read, then not said"); not adopted by its rule (seed 0: 76 of 90 held-out answers, seed 1: 51),
# docs/training-record.md, "Leading to the word", results/train/learnt-lead/
RECIPES["learnt-lead"] = replace(RECIPES["learnt"], lead_weight=1.0)
# learnt-lead with the codebook's learning rate settling in both LM stages (20 warm-up steps, then a
# cosine decay to 0 over the stage's budget): learnt-lead's seed 1 spent most of stage 1 on a noisy
# plateau (means of 25 steps 4.2-5.4, single steps up to 21) where seed 0 kept descending, and its
# long layouts fell apart; batch-one Adam at a constant 1e-2 has a noise floor that a decaying rate
# lowers (docs/training-record.md, "A settled codebook"; results/train/lead-cosine/)
RECIPES["lead-cosine"] = replace(RECIPES["learnt-lead"], codebook_schedule="cosine")
# lead-cosine with half the training clips drawn another way, in every stage: anti-aliased edges
# and each object's colour drawn from its name's range (hue towards the neighbouring palette hues,
# saturation 0.6-1, value 0.5-1 or 0.8-1), where every recipe before drew one RGB value a name;
# the ranges come from the palette alone (docs/training-record.md, "Colour names, not colour values";
# results/train/lead-range/)
RECIPES["lead-range"] = replace(RECIPES["lead-cosine"], p_varied=0.5)
# lead-range with the clips drawn another way only where the tower's slot read-out is fitted
# (stage 2a, no LM): lead-range's gain on other drawings is a colour read by range, its cost the
# long raw layouts of stage 3, whose harder images left its tail loss high; here both LM stages
# draw exactly lead-cosine's clips; not adopted by its rule (colour on unseen redrawn scenes 85 and 81
# of 96 against 69, but seed 0's shape there and seed 1's standard set fell short; docs/training-record.md,
# "The range in the read-out alone"; results/train/range-readout/)
RECIPES["range-readout"] = replace(RECIPES["lead-range"], varied_in="readout")
# lead-cosine with a three-layer tower that gives every patch of an object that object's shape:
# the second layer saturates the colour slots, a third pools the shape slots by colour in one
# attention head and makes them one-hot in closed form (mlb_core/train/pool.py; a learnt MLP is the
# other sharpening, untrained), on single training frames, no LM; 32 reserved residual dimensions
# (16 before) for what the later layers write (docs/training-record.md, "A tower that pools shape";
# results/train/pooled/)
RECIPES["pooled"] = replace(RECIPES["lead-cosine"], pool="shape", reserved=32, feature_layer=-1)
# the committed weights' recipe (mlb_core/weights/embedded-vision): long-branch from 2026-12-04 to
# 12-05, learnt and then lead-cosine on 2026-12-05, pooled since 2026-12-06, each adopted by a rule
# written before its held-out runs (docs/training-record.md, "Branched questions", "A learnt
# read-out", "A settled codebook", "A tower that pools shape")
RECIPES["committed"] = RECIPES["pooled"]
COMMITTED_MINUTES = 30.0  # its planned time (params.yaml train.minutes), the default of every entry point
# the outline recipe, then its slot units made clamps (stage 4, closed form): the colour slots
# alone, or every slot; tried 2026-12-04 and not adopted (its own training 42 of 90 held-out
# answers against 48; docs/training-record.md, "Saturated slots"; results/train/saturated-all/)
RECIPES["saturated"] = replace(_OUTLINE, saturate="colour")
RECIPES["saturated-all"] = replace(_OUTLINE, saturate="all")


# ---- model I/O -----------------------------------------------------------------------
def default_source() -> Path:
    """The untrained embedded checkpoint folder, built on first use
    (:func:`mlb_core.backbones.embedded.ensure_embedded`): the training's starting point, as
    ``mlb train-vision`` uses it."""
    from mlb_core.backbones.embedded import ensure_embedded

    return ensure_embedded(trained=False)


def load_checkpoint(folder: Path) -> tuple[Any, Any, Any]:
    """(model, tokenizer, image processor) of a checkpoint folder, fp32, eval mode."""
    from transformers import AutoTokenizer, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil

    model = LlavaNextForConditionalGeneration.from_pretrained(str(folder), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(folder)), LlavaNextImageProcessorPil.from_pretrained(str(folder))


def _prompt(question: str, form: str, options: tuple[str, ...]) -> tuple[str, str]:
    """(prefix, suffix) of the project's smollm2 prompt (:mod:`mlb_core.backbones.prompts`)."""
    from mlb_core.backbones.prompts import render_prompt

    prompt = render_prompt("smollm2", question, form, options=list(options) if form == "mc" else None)
    return prompt.prefix, prompt.suffix


def pixel_values(frames: np.ndarray, processor: Any) -> torch.Tensor:
    """(T, 336, 336, 3) uint8 -> (T, 3, 336, 336) float32 normalised as the processor does
    for an image already at its size (rescale by 1/255, then mean/std)."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() * float(processor.rescale_factor)
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    return (x - mean) / std


class Codebook(torch.nn.Module):
    """Ideal visual tokens: one vector per colour, per shape and for the background."""

    def __init__(self, embed: torch.nn.Embedding, tokenizer: Any) -> None:
        super().__init__()

        def word(w: str) -> torch.Tensor:
            ids = tokenizer(w, add_special_tokens=False).input_ids
            return embed.weight[ids].mean(0).detach().clone()  # (D,)

        self.colour = torch.nn.Parameter(torch.stack([word(" " + c) for c in scenes.COLOURS]))  # (6, D)
        self.shape = torch.nn.Parameter(torch.stack([word(" " + s) for s in scenes.SHAPES]))  # (3, D)
        self.background = torch.nn.Parameter(0.1 * word(" the"))  # (D,)

    def forward(self, coverage: torch.Tensor, spec: scenes.ClipSpec, shape_target: str = "coverage") -> torch.Tensor:
        """coverage (T, K, 24, 24) -> ideal tokens (T, 24, 24, D); the shape vector weighted as
        :func:`slot_targets` weighs it."""
        colours = torch.stack([self.colour[scenes.COLOURS.index(o.colour)] for o in spec.objects])  # (K, D)
        shapes = torch.stack([self.shape[scenes.SHAPES.index(o.shape)] for o in spec.objects])  # (K, D)
        shape_w = outline_weight(coverage) if shape_target == "outline" else coverage  # (T, K, 24, 24)
        obj = torch.einsum("tkhw,kd->thwd", coverage, colours) + torch.einsum("tkhw,kd->thwd", shape_w, shapes)
        return obj + (1 - coverage.sum(1))[..., None] * self.background


# ---- the LM loss -----------------------------------------------------------------------
@dataclass
class LMText:
    """Text embeddings of one training example: (P, D) prefix, (S, D) suffix, (A,) answer
    ids (answer text then ``<|im_end|>``) and ``key``, the position in the answer of the
    first token of its truth word (None if the tokenizer splits it otherwise)."""

    prefix: torch.Tensor
    suffix: torch.Tensor
    answer: torch.Tensor
    key: int | None = None


def lm_text(model: Any, tokenizer: Any, q: scenes.Question) -> LMText:
    prefix, suffix = _prompt(q.question, q.form, q.options)
    embed = model.get_input_embeddings()
    pre = tokenizer(prefix, add_special_tokens=True, return_tensors="pt").input_ids[0]
    suf = tokenizer(suffix, add_special_tokens=False, return_tensors="pt").input_ids[0]
    ans = tokenizer(q.answer + "<|im_end|>", add_special_tokens=False, return_tensors="pt").input_ids[0]
    firsts = {tokenizer(w, add_special_tokens=False).input_ids[0] for w in (" " + q.truth, q.truth)}
    key = next((i for i, t in enumerate(ans.tolist()) if t in firsts), None)
    dev = embed.weight.device
    with torch.no_grad():
        return LMText(embed(pre.to(dev)), embed(suf.to(dev)), ans.to(dev), key)


def answer_loss(model: Any, text: LMText, visual: torch.Tensor, key_weight: float = 0.0,
                lead_weight: float = 0.0) -> torch.Tensor:
    """Mean next-token cross-entropy of the answer given ``prefix + visual (N, D) + suffix``,
    plus ``key_weight`` times the cross-entropy at the answer's key token and ``lead_weight``
    times that at the token before it (:func:`mlb_core.train.branches.key_terms`)."""
    with torch.no_grad():
        ans_emb = model.get_input_embeddings()(text.answer)  # (A, D)
    x = torch.cat([text.prefix, visual, text.suffix, ans_emb])[None]  # (1, L, D)
    hidden = model.model.language_model(inputs_embeds=x).last_hidden_state[0]  # (L, D)
    a = len(text.answer)
    logits = model.lm_head(hidden[-a - 1:-1]).float()  # (A, V)
    return F.cross_entropy(logits, text.answer) + branches.key_terms(logits, text, key_weight, lead_weight)


def pick_question(rng: np.random.Generator, spec: scenes.ClipSpec, p_mc: float) -> scenes.Question:
    """One question about the clip (open or, with probability ``p_mc``, multiple choice)."""
    form = "mc" if rng.random() < p_mc else "open"
    qs = scenes.make_questions(spec, int(rng.integers(1 << 31)), forms=(form,))
    return qs[int(rng.integers(len(qs)))]


def lm_cost(n_tokens: int, recipe: Recipe, threads: int) -> float:
    """Modelled seconds of one LM forward+backward over ``n_tokens`` tokens."""
    one = recipe.sec_per_token * n_tokens + recipe.sec_per_token2 * n_tokens**2
    return one / recipe.thread_speedup ** math.log2(max(1, threads))


def finetune_step_cost(layout: layouts.Layout, texts: list[LMText], recipe: Recipe, threads: int) -> float:
    """Modelled seconds of one stage-3 step: the LM over the layout and the branches' extra
    text, plus the tower over the layout's frames."""
    return lm_cost(layout.n_tokens + branches.branch_tokens(texts), recipe, threads) + (
        recipe.sec_per_frame * layout.n_frames / (recipe.thread_speedup ** math.log2(max(1, threads))))


def _curriculum(spent: float, budget: float, lo: int, hi: int) -> int:
    """Token cap growing log-linearly from ``lo`` to ``hi`` over the first 80% of a stage."""
    frac = min(1.0, spent / max(1e-9, 0.8 * budget))
    return int(lo * (hi / lo) ** frac)


# ---- stages ----------------------------------------------------------------------------
def stage_codebook(model: Any, tokenizer: Any, codebook: Codebook, budget_s: float, seed: int,
                   recipe: Recipe, threads: int, log: list[dict[str, Any]]) -> None:
    """Stage 1: fit the codebook with the LM loss on idealised clips, all layouts."""
    rng = np.random.default_rng([seed, 1])
    opt = torch.optim.Adam(codebook.parameters(), lr=recipe.lr_codebook)
    spent, step = 0.0, 0
    while spent < budget_s:
        cap = _curriculum(spent, budget_s, recipe.codebook_min_tokens, recipe.codebook_max_tokens)
        layout = layouts.sample_layout(rng, cap)
        spec = _sample_spec(rng, layout.n_frames, recipe)
        q = pick_question(rng, spec, recipe.p_mc)
        text = lm_text(model, tokenizer, q)
        coverage = torch.from_numpy(scenes.clip_coverage(spec)).to(next(codebook.parameters()).device)  # (T, K, 24, 24)
        ideal = codebook(coverage, spec, recipe.shape_target)  # (T, 24, 24, D)
        loss = answer_loss(model, text, layouts.arrange(ideal, layout), recipe.key_weight, recipe.lead_weight)
        opt.zero_grad()
        loss.backward()
        schedule_codebook(opt.param_groups[0], recipe.lr_codebook, step, spent / budget_s, recipe.codebook_schedule)
        opt.step()
        spent += lm_cost(layout.n_tokens, recipe, threads)
        step += 1
        log.append({"stage": "codebook", "step": step, "layout": layout.name, "tokens": layout.n_tokens,
                    "loss": round(loss.item(), 4), "lr": opt.param_groups[0]["lr"]})


def _sample_spec(rng: np.random.Generator, n_frames: int, recipe: Recipe, stage: str = "lm") -> scenes.ClipSpec:
    """One training clip of ``n_frames`` frames; ``stage``: which stage draws it (``"readout"``: the
    slot read-out's fit; ``"lm"``: any other), so that ``recipe.varied_in`` can keep the clips drawn
    another way to the read-out."""
    n_objects = 2 if rng.random() < recipe.p_two_objects else 1
    kinds = scenes.BACKGROUND_KINDS if recipe.greys else scenes.BACKGROUNDS
    spec = scenes.sample_clip(int(rng.integers(1 << 31)), n_frames, "train", n_objects, recipe.p_partial,
                              span=recipe.span, backgrounds=kinds)
    varies = recipe.p_varied > 0 and recipe.varied_in in ("all", stage)
    if varies and rng.random() < recipe.p_varied:  # no draw at all when 0: older recipes unchanged
        spec = scenes.vary_drawing(spec, int(rng.integers(1 << 31)))
    return spec


N_SLOTS = _N_COLOURS + _N_SHAPES + 1  # projector hidden units that carry the codebook


OUTLINE_FULL = 0.1  # coverage from which (to 1 - this) a patch counts fully as outline


def outline_weight(coverage: torch.Tensor) -> torch.Tensor:
    """How much a patch is on an object's outline, from its coverage ``c`` (any shape):
    ``min(1, 4c(1-c) / (4 * 0.1 * 0.9))``: 1 for ``0.1 <= c <= 0.9``, falling to 0 on a patch
    the object covers wholly or not at all."""
    full = 4 * OUTLINE_FULL * (1 - OUTLINE_FULL)
    return (4 * coverage * (1 - coverage) / full).clamp(max=1.0)


def slot_targets(coverage: torch.Tensor, spec: scenes.ClipSpec, shape_target: str = "coverage") -> torch.Tensor:
    """Coverage (T, K, 24, 24) -> (T, 24, 24, N_SLOTS): per patch, how much of it shows each
    colour, each shape (``shape_target="outline"``: how much it is on the shape's outline,
    :func:`outline_weight`), and the background (1 - the objects' coverage)."""
    t, _, h, w = coverage.shape
    out = torch.zeros(t, h, w, N_SLOTS)
    shape_w = outline_weight(coverage) if shape_target == "outline" else coverage
    for k, o in enumerate(spec.objects):
        out[..., scenes.COLOURS.index(o.colour)] += coverage[:, k]
        out[..., len(scenes.COLOURS) + scenes.SHAPES.index(o.shape)] += shape_w[:, k]
    out[..., -1] = 1 - coverage.sum(1)
    return out


def install_codebook(model: Any, codebook: Codebook) -> None:
    """Write the codebook into the projector's second linear layer: its first N_SLOTS input
    units become the colour, shape and background vectors, every other weight and the bias
    zero. A patch token is then ``sum_k slot_k * vector_k``: the ideal token when the slots
    (the activations after the projector's GELU) equal :func:`slot_targets`."""
    lin = model.model.multi_modal_projector.linear_2
    vectors = torch.cat([codebook.colour, codebook.shape, codebook.background[None]])  # (N_SLOTS, D)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[:, :N_SLOTS] = vectors.T
        if lin.bias is not None:
            lin.bias.zero_()


def slots(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels (T, 3, 336, 336) -> the projector's slot activations (T, 24, 24, N_SLOTS)."""
    feats = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[model.config.vision_feature_layer]
    return _slots_from_features(model, feats)


def _slots_from_features(model: Any, feats: torch.Tensor) -> torch.Tensor:
    """Tower features (T, 1 + 576, H) of the configured layer -> slot activations (T, 24, 24, N_SLOTS)."""
    if model.config.vision_feature_select_strategy == "default":
        feats = feats[:, 1:]
    proj = model.model.multi_modal_projector
    act = effective_slots(proj.act(proj.linear_1(feats)), slot_gains(proj, N_SLOTS), N_SLOTS)  # (T, 576, N_SLOTS)
    side = int(math.isqrt(act.shape[1]))
    return act.reshape(len(feats), side, side, N_SLOTS)


def _slot_loss(act: torch.Tensor, target: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """Weighted MSE between slot activations and targets, both (T, 24, 24, N_SLOTS); patches
    touched by an object weigh ``object_weight``."""
    weight = 1 + (recipe.object_weight - 1) * (1 - target[..., -1]).clamp(0, 1)  # (T, 24, 24)
    err = (act - target).pow(2).sum(-1)  # (T, 24, 24)
    return (err * weight).sum() / weight.sum()


def colour_rows(model: Any, processor: Any, bank: scenes.VideoBank, seed: int, recipe: Recipe,
                n_frames: int = 8) -> torch.Tensor:
    """(n_frames * 576, C + 4C): the first layer's second layer-norm output on the patch
    embedding's colour rows (channel and quadrant means), on ``n_frames`` training frames: the
    sample :func:`mlb_core.train.tower_init.colour_units` scales and centres its units on."""
    layer = clip_parts(model.model.vision_tower)[2].layers[0]
    n_colour = n_colour_rows(model.config.vision_config.num_channels)
    caught: dict[str, torch.Tensor] = {}
    handle = layer.layer_norm2.register_forward_hook(lambda m, i, o: caught.__setitem__("x", o))
    rng = np.random.default_rng([seed, 7])
    try:
        specs = [_sample_spec(rng, 1, recipe) for _ in range(n_frames)]
        with torch.no_grad():
            model.model.vision_tower(pixel_values(np.concatenate([scenes.render_clip(s, bank)[0] for s in specs]),
                                                  processor))
    finally:
        handle.remove()
    return caught["x"][:, 1:, :n_colour].reshape(-1, n_colour)  # patches only


def fit_slot_readout(model: Any, processor: Any, bank: scenes.VideoBank, reserved: list[int], seed: int,
                     recipe: Recipe) -> dict[str, Any]:
    """Stage 2a (closed form, no LM), after :func:`mlb_core.train.tower_init.edge_energy_init`:
    a weighted ridge regression from the first layer's MLP hidden units (rectified edge
    responses and random features of the patch) to every patch's ten slot targets
    (:func:`slot_targets` with ``recipe.shape_target``) over ``recipe.outline_fit_frames``
    rendered frames, written into ten reserved residual dimensions (the MLP's second layer);
    the projector's ten slot units then read those dimensions alone (weight 1, bias 0).
    ``recipe.readout="learnt"``: the first layer's free MLP units and the read-out are fitted
    together with Adam on the slots after the projector's GELU (:func:`mlb_core.train.readout.learn_readout`).

    Returns a log row: frames, patches, the fit's R^2, and its per-object colour and shape
    accuracy on the fitted frames (the slot whose summed prediction over the patches the
    object touches is largest).
    """
    assert len(reserved) >= N_SLOTS, f"{len(reserved)} reserved dimensions < {N_SLOTS} slots"
    rng = np.random.default_rng([seed, 4])
    tower = model.model.vision_tower
    mlp = clip_parts(tower)[2].layers[0].mlp
    caught: dict[str, torch.Tensor] = {}
    learnt = recipe.readout == "learnt"
    if learnt:  # the MLP's input (the second layer norm's output): the free units are refitted
        layer = clip_parts(tower)[2].layers[0]
        handle = layer.layer_norm2.register_forward_hook(lambda m, i, o: caught.__setitem__("h", o))
    else:
        handle = mlp.fc1.register_forward_hook(lambda m, i, o: caught.__setitem__("h", mlp.activation_fn(o)))
    hs, ys, ws, objects = [], [], [], []
    try:
        for start in range(0, recipe.outline_fit_frames, recipe.regress_batch):
            n = min(recipe.regress_batch, recipe.outline_fit_frames - start)
            specs = [_sample_spec(rng, 1, recipe, "readout") for _ in range(n)]
            rendered = [scenes.render_clip(spec, bank) for spec in specs]
            with torch.no_grad():
                tower(pixel_values(np.concatenate([f for f, _ in rendered]), processor).to(model.device))
            hidden = caught["h"][:, 1:].cpu()  # (n, 576, I): patches only; the fit runs on the CPU
            for i, (spec, (_, cover)) in enumerate(zip(specs, rendered, strict=True)):
                cov = torch.from_numpy(cover)  # (1, K, 24, 24)
                hs.append(hidden[i])
                ys.append(slot_targets(cov, spec, recipe.shape_target)[0].reshape(-1, N_SLOTS))  # (576, N_SLOTS)
                ws.append(1 + (recipe.object_weight - 1) * (cov[0].sum(0).reshape(-1) > 0).float())
                for k, o in enumerate(spec.objects):
                    objects.append((len(hs) - 1, cov[0, k].reshape(-1) > 0.05, scenes.COLOURS.index(o.colour),
                                    scenes.SHAPES.index(o.shape)))
    finally:
        handle.remove()
    extra: dict[str, Any] = {}
    if learnt:
        x_patch = torch.cat(hs).float()  # (N, D): the MLP's input
        y, w = torch.cat(ys).float(), torch.cat(ws).float()  # (N, N_SLOTS), (N,)
        n_fixed = len(edge_rows(clip_parts(tower)[0].patch_embedding, len(reserved)))
        params, extra = learn_readout(x_patch, y, w, mlp.fc1, mlp.activation_fn, n_fixed, seed,
                                      recipe.readout_steps, recipe.readout_lr, ridge=recipe.outline_ridge)
        with torch.no_grad():
            pred = slots_of(x_patch, params["w1"], params["b1"], params["w2"], params["b2"], mlp.activation_fn)
        beta = torch.cat([params["w2"].T, params["b2"][None]]).double()  # (I + 1, N_SLOTS)
        y = y.double()
        pred = pred.double()
    else:
        h = torch.cat(hs).double()  # (N, I)
        x = torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], 1)  # (N, I + 1)
        y, w = torch.cat(ys).double(), torch.cat(ws).double()  # (N, N_SLOTS), (N,)
        if recipe.inverse_gelu:  # fit what the projector's GELU turns into the targets
            y = gelu_inverse(y)
        reg = recipe.outline_ridge * torch.eye(x.shape[1], dtype=x.dtype)
        reg[-1, -1] = 0  # the intercept is not shrunk
        beta = torch.linalg.solve((x * w[:, None]).T @ x + reg, (x * w[:, None]).T @ y)  # (I + 1, N_SLOTS)
        pred = x @ beta
    r2 = 1 - ((pred - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()  # learnt: of the slots after the GELU
    per_frame = pred.reshape(len(hs), -1, N_SLOTS)
    n_col = len(scenes.COLOURS)
    colour_hits = shape_hits = 0
    for f, mask, colour, shape in objects:
        total = per_frame[f][mask].sum(0)  # (N_SLOTS,)
        colour_hits += int(total[:n_col].argmax()) == colour
        shape_hits += int(total[n_col:n_col + len(scenes.SHAPES)].argmax()) == shape
    dims = reserved[:N_SLOTS]
    lin1 = model.model.multi_modal_projector.linear_1
    dev = mlp.fc2.weight.device
    with torch.no_grad():
        if learnt:
            mlp.fc1.weight.copy_(params["w1"].to(dev))
            mlp.fc1.bias.copy_(params["b1"].to(dev))
        mlp.fc2.weight[dims] = beta[:-1].T.float().to(dev)
        mlp.fc2.bias[dims] = beta[-1].float().to(dev)
        for j, d in enumerate(dims):  # the projector's slot unit j reads reserved dimension j
            lin1.weight[j] = 0
            lin1.weight[j, d] = 1.0
            lin1.bias[j] = 0
    n_obj = max(1, len(objects))
    return {"stage": "outline", "frames": len(hs), "patches": len(y), "r2": round(float(r2), 4),
            "colour_accuracy": round(colour_hits / n_obj, 4), "shape_accuracy": round(shape_hits / n_obj, 4),
            "objects": len(objects), **({"readout": "learnt", **extra} if learnt else {})}


POOL_PARTS = ("saturate", "scale", "sharpen")  # build_pool's fits, each drawing its own stream


def stage_pool(model: Any, processor: Any, bank: scenes.VideoBank, reserved: list[int], seed: int,
               recipe: Recipe) -> dict[str, Any]:
    """Stage 2b (closed form and fitted, no LM), after :func:`fit_slot_readout`: the tower's second
    layer saturates the colour slots, a third layer pools the shape slots over each object and
    sharpens them, and the projector's shape units read the result
    (:func:`mlb_core.train.pool.build_pool`). The clamps are fitted on ``recipe.saturate_frames``
    single training frames, the sharpening on ``recipe.outline_fit_frames`` (as many as the
    read-out), ``recipe.readout_steps`` Adam steps from ``recipe.readout_lr``. Returns its log row."""
    tower = model.model.vision_tower

    def batches(n: int, part: str) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng([seed, 12, POOL_PARTS.index(part)])
        for start in range(0, n, recipe.regress_batch):
            k = min(recipe.regress_batch, n - start)
            specs = [_sample_spec(rng, 1, recipe, "readout") for _ in range(k)]
            rendered = [scenes.render_clip(spec, bank) for spec in specs]
            pix = pixel_values(np.concatenate([f for f, _ in rendered]), processor).to(model.device)
            target = torch.stack([slot_targets(torch.from_numpy(c), spec, recipe.shape_target)[0]
                                  for spec, (_, c) in zip(specs, rendered, strict=True)])  # (k, 24, 24, N_SLOTS)
            touched = torch.stack([torch.from_numpy(c)[0].sum(0) > 0 for _, c in rendered])  # (k, 24, 24)
            weight = 1 + (recipe.object_weight - 1) * touched.float()
            yield pix, target.reshape(k, -1, N_SLOTS), weight.reshape(k, -1)

    shape_units = list(range(_N_COLOURS, _N_COLOURS + _N_SHAPES))
    return build_pool(tower, model.model.multi_modal_projector, reserved, batches, shape_units, seed,
                      recipe.pool_gain, recipe.pool_clamp_gain, recipe.saturate_frames, recipe.outline_fit_frames,
                      recipe.readout_steps, recipe.pool_lr, recipe.outline_ridge, recipe.pool_sharpen)


def stage_saturate(model: Any, processor: Any, bank: scenes.VideoBank, seed: int,
                   recipe: Recipe) -> dict[str, Any]:
    """Stage 4 (no LM, no gradient on the model): turn the slot units of ``recipe.saturate``
    into clamps (:mod:`mlb_core.train.saturate`), ``clamp(a z + b, 0, 1)`` with ``a, b`` fitted
    by least squares to :func:`slot_targets` over ``recipe.saturate_frames`` fresh training
    frames (their own seeded stream), patches weighted as in :func:`_slot_loss`.

    Returns a log row: frames, the fitted ``a`` and ``b``, and the saturated slots' mean value on
    patches whose target is above 0.5 and below 0.05, before and after.
    """
    chosen = list(range(N_SLOTS))[SLOT_GROUPS[recipe.saturate]]
    proj = model.model.multi_modal_projector
    rng = np.random.default_rng([seed, 11])
    zs, ys = [], []
    with torch.no_grad():
        for start in range(0, recipe.saturate_frames, recipe.regress_batch):
            n = min(recipe.regress_batch, recipe.saturate_frames - start)
            specs = [_sample_spec(rng, 1, recipe) for _ in range(n)]
            rendered = [scenes.render_clip(spec, bank) for spec in specs]
            feats = model.model.vision_tower(pixel_values(np.concatenate([f for f, _ in rendered]), processor),
                                             output_hidden_states=True).hidden_states[model.config.vision_feature_layer]
            if model.config.vision_feature_select_strategy == "default":
                feats = feats[:, 1:]
            zs.append(proj.linear_1(feats)[..., :N_SLOTS].reshape(-1, N_SLOTS))  # (n * 576, N_SLOTS)
            ys.extend(slot_targets(torch.from_numpy(c), s, recipe.shape_target).reshape(-1, N_SLOTS)
                      for s, (_, c) in zip(specs, rendered, strict=True))
    z, y = torch.cat(zs), torch.cat(ys)  # (N, N_SLOTS)
    weight = 1 + (recipe.object_weight - 1) * (1 - y[:, -1]).clamp(0, 1)  # (N,)
    a, b = fit_saturation(z[:, chosen], y[:, chosen], weight, recipe.saturate_gain)
    a_all, b_all = torch.ones(N_SLOTS), torch.zeros(N_SLOTS)
    a_all[chosen], b_all[chosen] = a, b
    before = F.gelu(z[:, chosen])
    saturate_slots(proj, a_all, b_all, chosen, N_SLOTS, recipe.saturate_gain)
    after = clamp_pair(z[:, chosen] * a + b, recipe.saturate_gain)  # what the rewritten units give
    on, off = y[:, chosen] > 0.5, y[:, chosen] < 0.05

    def mean(x: torch.Tensor, m: torch.Tensor) -> float:
        return round(float(x[m].mean()), 4) if bool(m.any()) else float("nan")

    return {"stage": "saturate", "frames": recipe.saturate_frames, "slots": chosen,
            "a": [round(float(v), 4) for v in a], "b": [round(float(v), 4) for v in b],
            "on_before": mean(before, on), "on_after": mean(after, on),
            "off_before": mean(before, off), "off_after": mean(after, off)}


def stage_regress(model: Any, processor: Any, bank: scenes.VideoBank, n_steps: int, seed: int,
                  recipe: Recipe, log: list[dict[str, Any]]) -> None:
    """Stage 2 (no LM): the tower and the projector's first layer regress every patch's slot
    activations onto how much of it each colour, shape and the background cover; with
    ``recipe.shape_weight`` > 0, plus the cross-entropy of an image-level shape head on the
    tower's pooled CLS output (single-object frames): a signal about the whole outline that
    the per-patch targets do not give."""
    rng = np.random.default_rng([seed, 2])
    tower = model.model.vision_tower
    params = _vision_params(model)
    head = None
    if recipe.shape_weight:  # built without drawing from the global generator, as no head at all
        head = torch.nn.utils.skip_init(torch.nn.Linear, tower.config.hidden_size, len(scenes.SHAPES))
        with torch.no_grad():
            bound = 1 / math.sqrt(tower.config.hidden_size)
            head.weight.uniform_(-bound, bound, generator=torch.Generator().manual_seed(seed))
            head.bias.zero_()
        head.to(model.device)
        params = [*params, *head.parameters()]
    opt = torch.optim.AdamW(params, lr=recipe.lr_regress, weight_decay=0.0)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, s / max(1, n_steps), recipe.regress_schedule))
    cfg = model.config
    for step in range(n_steps):
        frames, targets, labels = [], [], []
        for _ in range(recipe.regress_batch):
            spec = _sample_spec(rng, 1, recipe)
            f, c = scenes.render_clip(spec, bank)  # (1, S, S, 3), (1, K, 24, 24)
            frames.append(f)
            targets.append(slot_targets(torch.from_numpy(c), spec, recipe.shape_target))
            labels.append(scenes.SHAPES.index(spec.objects[0].shape) if len(spec.objects) == 1 else -100)
        out = tower(pixel_values(np.concatenate(frames), processor).to(model.device), output_hidden_states=True)
        act = _slots_from_features(model, out.hidden_states[cfg.vision_feature_layer])  # (B, 24, 24, N_SLOTS)
        slot = _slot_loss(act, torch.cat(targets).to(act.device), recipe)
        loss, row = slot, {"stage": "regress", "step": step + 1, "loss": round(slot.item(), 5)}
        if head is not None and any(y >= 0 for y in labels):
            shape = F.cross_entropy(head(out.pooler_output), torch.tensor(labels, device=act.device),
                                    ignore_index=-100)
            loss = slot + recipe.shape_weight * shape
            row["shape_ce"] = round(shape.item(), 4)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        log.append(row)


def stage_finetune(model: Any, tokenizer: Any, processor: Any, bank: scenes.VideoBank,
                   budget_s: float, seed: int, recipe: Recipe, threads: int, log: list[dict[str, Any]]) -> None:
    """Stage 3: end to end, LM answer loss on rendered clips in random layouts, plus the slot
    regression as an anchor; the codebook columns of the projector's last layer learn at
    ``recipe.lr_codebook_finetune`` (0: fixed), outside the vision parameters' gradient clipping.
    With ``recipe.train_tower`` False the codebook alone learns (the anchor is only logged)."""
    rng = np.random.default_rng([seed, 3])
    params = _vision_params(model) if recipe.train_tower else []
    lin = model.model.multi_modal_projector.linear_2
    book = lin.weight[:, :N_SLOTS]  # (D, N_SLOTS), fixed: a view, as in the first recipe
    groups: list[dict[str, Any]] = [{"params": params}] if params else []
    if recipe.lr_codebook_finetune:
        book = torch.nn.Parameter(book.detach().clone())
        groups.append({"params": [book], "lr": recipe.lr_codebook_finetune})
    opt = torch.optim.AdamW(groups, lr=recipe.lr_finetune, weight_decay=0.0)
    spent, step = 0.0, 0
    while spent < budget_s:
        cap = _curriculum(spent, budget_s, recipe.codebook_min_tokens, recipe.finetune_max_tokens)
        if recipe.p_long and rng.random() < recipe.p_long:  # no draw at p_long 0: older recipes' stream
            layout = layouts.sample_long_layout(rng, recipe.long_min_tokens, recipe.long_max_tokens)
        else:
            layout = layouts.sample_layout(rng, cap)
        spec = _sample_spec(rng, layout.n_frames, recipe)
        if recipe.branches > 1:  # no extra draw at 1: older recipes' stream
            texts = [lm_text(model, tokenizer, q)
                     for q in branches.pick_questions(rng, spec, recipe.p_mc, recipe.branches)]
        else:
            texts = [lm_text(model, tokenizer, pick_question(rng, spec, recipe.p_mc))]
        frames, cover = scenes.render_clip(spec, bank)
        act = slots(model, pixel_values(frames, processor).to(model.device))  # (T, 24, 24, N_SLOTS)
        tokens = F.linear(act, book, lin.bias)  # (T, 24, 24, D): the other units' weights are 0
        visual = layouts.arrange(tokens, layout)  # (N, D)
        if len(texts) > 1:  # one question keeps answer_loss: the committed weights' arithmetic, bit for bit
            lm = branches.branched_answer_loss(model, texts, visual, recipe.key_weight, recipe.lead_weight)
        else:
            lm = answer_loss(model, texts[0], visual, recipe.key_weight, recipe.lead_weight)
        target = slot_targets(torch.from_numpy(cover), spec, recipe.shape_target).to(act.device)  # (T, 24, 24, N_SLOTS)
        anchor = _slot_loss(act, target, recipe)
        loss = lm + recipe.anchor_weight * anchor
        opt.zero_grad()
        loss.backward()
        if params:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        if recipe.lr_codebook_finetune:  # the codebook's group is the last
            schedule_codebook(opt.param_groups[-1], recipe.lr_codebook_finetune, step, spent / budget_s,
                              recipe.codebook_schedule)
        opt.step()
        spent += finetune_step_cost(layout, texts, recipe, threads)
        step += 1
        row = {"stage": "finetune", "step": step, "layout": layout.name, "tokens": layout.n_tokens,
               "lm": round(lm.item(), 4), "anchor": round(anchor.item(), 5), "lr": opt.param_groups[-1]["lr"]}
        if recipe.branches > 1:
            row["questions"] = len(texts)
        log.append(row)
    if recipe.lr_codebook_finetune:
        with torch.no_grad():
            lin.weight[:, :N_SLOTS] = book


def _vision_params(model: Any) -> list[torch.nn.Parameter]:
    """What stages 2 and 3 train: the tower and the projector's first layer (its last layer
    holds the codebook)."""
    return [*model.model.vision_tower.parameters(), *model.model.multi_modal_projector.linear_1.parameters()]


# ---- entry point -----------------------------------------------------------------------
def train_vision(out_dir: str | Path, seed: int = 0, minutes_budget: float = COMMITTED_MINUTES, threads: int = 2,
                 source: str | Path | None = None, recipe: Recipe | None = None,
                 device: str = "cpu") -> dict[str, Any]:
    """Train the vision tower and projector of the untrained embedded checkpoint.

    Args:
        out_dir: where the trained checkpoint folder is written (``save_pretrained`` +
            tokenizer + image processor + ``MODEL_CARD.md`` + ``train_log.json``).
        seed: seeds the data stream and the torch generator.
        minutes_budget: planned training time on ``threads`` threads (the stages' sizes
            come from a cost model, so the wall time is close to, not bounded by, this).
        threads: ``torch.set_num_threads`` during training.
        source: the untrained checkpoint folder; default: the embedded default's.
        recipe: hyper-parameters; default ``RECIPES["committed"]`` (the committed weights' recipe).
        device: where stages 1 to 3 run (``"cpu"``, ``"cuda"``). The plan does not depend on
            it (the cost model is in CPU seconds at ``threads``), so on a GPU the same plan runs
            faster, not longer; the numbers differ from a CPU run's in the last bits, so only a
            CPU run reproduces the committed weights. The tower's initialisation, stage 4 and the
            saving run on the CPU.

    Returns:
        A summary dict (stage sizes, wall times, final losses, output size).
    """
    recipe = recipe or RECIPES["committed"]
    out = Path(out_dir)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        model, tokenizer, processor = load_checkpoint(Path(source) if source else default_source())
        model.config.vision_feature_layer = recipe.feature_layer
        reserved: list[int] = []
        bank = scenes.VideoBank()
        if recipe.tower_init in ("structured", "edges"):
            structured_init(model.model.vision_tower, seed)
        if recipe.tower_init == "edges":
            reserved = edge_energy_init(model.model.vision_tower, recipe.reserved)
            if recipe.pool != "none":
                mark_patches(model.model.vision_tower, reserved)
        if recipe.colour_units:
            colour_units(model.model.vision_tower, colour_rows(model, processor, bank, seed, recipe),
                         recipe.colour_unit_gain, seed)
        for p in model.parameters():
            p.requires_grad_(False)
        model.to(device)
        codebook = Codebook(model.get_input_embeddings(), tokenizer)
        budget = minutes_budget * 60.0
        speed = recipe.thread_speedup ** math.log2(max(1, threads))
        n_regress = max(1, int(budget * recipe.regress_share * speed / (recipe.sec_per_frame * recipe.regress_batch)))
        if not recipe.train_tower:
            n_regress = 0  # the closed-form read-out stays as fitted
        log: list[dict[str, Any]] = []
        wall: dict[str, float] = {}

        t = time.perf_counter()
        stage_codebook(model, tokenizer, codebook, budget * recipe.codebook_share, seed, recipe, threads, log)
        wall["codebook"] = time.perf_counter() - t
        for p in codebook.parameters():
            p.requires_grad_(False)
        install_codebook(model, codebook)
        if reserved:
            t = time.perf_counter()
            log.append(fit_slot_readout(model, processor, bank, reserved, seed, recipe))
            wall["outline"] = time.perf_counter() - t
        if recipe.pool != "none":
            t = time.perf_counter()
            log.append(stage_pool(model, processor, bank, reserved, seed, recipe))
            wall["pool"] = time.perf_counter() - t
        if recipe.train_tower:
            for p in _vision_params(model):
                p.requires_grad_(True)
            model.model.vision_tower.train()
            t = time.perf_counter()
            stage_regress(model, processor, bank, n_regress, seed, recipe, log)
            wall["regress"] = time.perf_counter() - t

        t = time.perf_counter()
        stage_finetune(model, tokenizer, processor, bank, budget * recipe.finetune_share, seed, recipe, threads, log)
        wall["finetune"] = time.perf_counter() - t
        model.to("cpu")
        codebook.to("cpu")
        if recipe.saturate != "none":
            t = time.perf_counter()
            log.append(stage_saturate(model, processor, bank, seed, recipe))
            wall["saturate"] = time.perf_counter() - t

        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        wall["total"] = time.perf_counter() - t0
        summary = _save(out, model, tokenizer, processor, codebook, recipe, log, wall, seed, minutes_budget, threads,
                        device)
        return summary
    finally:
        torch.set_num_threads(old_threads)


def _save(out: Path, model: Any, tokenizer: Any, processor: Any, codebook: Codebook, recipe: Recipe,
          log: list[dict[str, Any]], wall: dict[str, float], seed: int, minutes: float, threads: int,
          device: str = "cpu") -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    model.config.mlb_vision_trained = {"seed": seed, "minutes_budget": minutes, "threads": threads}
    if device != "cpu":  # a CPU run's config stays as before the field existed
        model.config.mlb_vision_trained["device"] = device
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    from safetensors.torch import save_file

    trained = {k: v.contiguous() for k, v in model.state_dict().items()
               if ".vision_tower." in f".{k}" or ".multi_modal_projector." in f".{k}"}
    save_file(trained, str(out / "vision.safetensors"))  # the trained parts alone (also in model.safetensors)
    save_file({k: v.contiguous() for k, v in codebook.state_dict().items()}, str(out / "codebook.safetensors"))
    projector_out = model.model.multi_modal_projector.linear_2.parameters()
    n_trained = sum(p.numel() for p in (*_vision_params(model), *projector_out))
    counts: dict[str, int] = {}
    for row in log:
        key = row["stage"] + (":" + row["layout"].rstrip("0123456789").rstrip("x") if "layout" in row else "")
        counts[key] = counts.get(key, 0) + 1

    def tail_mean(stage: str, key: str) -> float | None:
        vals = [r[key] for r in log if r["stage"] == stage][-50:]
        return round(sum(vals) / len(vals), 4) if vals else None

    summary = {
        "seed": seed, "threads": threads, "minutes_budget": minutes,
        "wall_s": {k: round(v, 1) for k, v in wall.items()},
        "steps": {s: sum(1 for r in log if r["stage"] == s) for s in ("codebook", "regress", "finetune")},
        "lm_tokens": {s: sum(r.get("tokens", 0) for r in log if r["stage"] == s) for s in ("codebook", "finetune")},
        "final_loss": {"codebook": tail_mean("codebook", "loss"), "regress": tail_mean("regress", "loss"),
                       "finetune_lm": tail_mean("finetune", "lm"), "finetune_anchor": tail_mean("finetune", "anchor")},
        "loss_curve": {"codebook": window_means(log, "codebook", "loss"),
                       "finetune_lm": window_means(log, "finetune", "lm")},
        "layout_counts": counts,
        "trained_params": n_trained, "trained_mb_fp32": round(n_trained * 4 / 2**20, 2),
        "vision_safetensors_bytes": (out / "vision.safetensors").stat().st_size,
        "vision_sha256": sha256_file(out / "vision.safetensors"),
        "recipe": asdict(recipe),
    }
    if device != "cpu":
        summary["device"] = device
    fit = next((r for r in log if r["stage"] == "outline"), None)
    if fit is not None:
        summary["outline_fit"] = {k: v for k, v in fit.items() if k != "stage"}
    pool = next((r for r in log if r["stage"] == "pool"), None)
    if pool is not None:
        summary["pool"] = {k: v for k, v in pool.items() if k != "stage"}
    sat = next((r for r in log if r["stage"] == "saturate"), None)
    if sat is not None:
        summary["saturate"] = {k: v for k, v in sat.items() if k != "stage"}
    (out / "train_log.json").write_text(json.dumps({"summary": summary, "log": log}, indent=0))
    (out / "MODEL_CARD.md").write_text(model_card(summary))
    return summary


def window_means(log: list[dict[str, Any]], stage: str, key: str, window: int = CURVE_WINDOW) -> list[float]:
    """A stage's loss curve: the mean of ``key`` over each run of ``window`` consecutive steps
    (the last run may be shorter), so that a summary shows how a stage went, not only how it ended."""
    vals = [r[key] for r in log if r["stage"] == stage]
    return [round(sum(vals[i:i + window]) / len(vals[i:i + window]), 4) for i in range(0, len(vals), window)]


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
