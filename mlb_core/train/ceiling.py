"""What the frozen LM can read at best: held-out accuracy on *ideal* visual tokens (``mlb heldout --ideal``).

The training recipe (:mod:`mlb_core.train.vision`) teaches the vision side to produce, for every
patch, an ideal token ``cover * (colour + shape) + (1 - cover) * background`` from a codebook
(:class:`~mlb_core.train.vision.Codebook`): at its initial value the LM's own word embeddings
(" red" + " circle", 0.1 x " the", ``codebook="words"``), after training the vectors learnt
through the LM (``codebook.safetensors`` in the weights folder, ``mlb heldout --ideal
--ideal-codebook learned``). If the frozen LM cannot name the colour or the shape from those
ideal tokens, no vision side trained towards them can do better. This check feeds held-out scenes'
ideal tokens, in a token layout, to the frozen SmolLM2 and reads its next-token choice at the
answer's colour (or shape) word, teacher-forced up to that word, among the six colours (or three
shapes): accuracy per layout and question kind. It needs no vision tower; ``scale`` multiplies the
object vectors (``sum_x2``: twice the word embeddings), ``background`` the background vector.
With two objects a clip (``--ideal-objects 2``) it asks whether the LM ties a colour to the shape
the question names, and :func:`continue_codebook` (optionally with :class:`JointCodebook`'s
vectors per colour-shape pair) whether more two-object training teaches it to (docs/training-record.md, "Not the
tower: the LM does not bind even ideal tokens"). ``--ideal-tower`` reads the same clips through
the model's own tokens (:func:`tower_tokens`), teacher-forced alike: the difference to the ideal
tokens is the tower's share of a miss; ``--ideal-swap colour|shape|background|all`` replaces one
group of the tower's slot activations by the training's targets for them before the projector's
last layer, so that a miss is traced to the slots that cause it (docs/training-record.md, "Where the
one-frame misses sit"); ``--ideal-swap shape-pooled`` instead points every patch's shape slots
at its object's average, found by the tower's own colour slots (:func:`pool_shape_by_colour`;
"Shape by the object").

The other half of the diagnosis is the tower: :func:`slot_accuracy` (``mlb heldout --slots``)
reads the trained projector's slot activations (the ten hidden units that carry the codebook,
:func:`~mlb_core.train.vision.slots`) on held-out frames, averages them over each object's
patches and takes the strongest colour and shape unit. When the slots are wrong, no LM can
answer from them; when they are right and the answers are not, the LM side is where it fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlb_core.errors import MLBError
from mlb_core.train import layouts, scenes
from mlb_core.train.vision import SLOT_GROUPS

LAYOUTS: dict[str, layouts.Layout] = {
    "raw x1": layouts.Layout("raw", 1, 1),  # one frame, 576 raw tokens (single_full)
    "bodytail3 x20": layouts.Layout("bodytail", 3, 20),  # mlb's layout at the cpu preset (1360 tokens)
}


def ideal_accuracy(n_clips: int = 12, scale: float = 1.0, background: float = 1.0, seed: int = 0,
                   source: Any = None, shape_scale: float | None = None,
                   codebook: str | Path = "words", n_objects: int = 1,
                   shape_target: str = "coverage", tokens: str = "ideal", swap: str | ShapeSwap | None = None,
                   layout_names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Teacher-forced accuracy of the frozen LM on ideal tokens: ``{layout: {colour, shape, n}}``.
    ``shape_scale`` (default ``scale``) multiplies the shape vectors alone: 0 leaves the colour
    word alone on the object's patches. ``codebook``: ``words`` (the LM's word embeddings, the
    training's starting point) or a ``codebook.safetensors`` the training learnt (the committed
    one is in the weights folder): the targets the vision side was trained towards.
    ``shape_target``: where the shape vector sits (``coverage`` or ``outline``, as the training's
    recipe put it, :func:`~mlb_core.train.vision.slot_targets`). ``n_objects`` 2: two objects of
    different colours and shapes a clip, each asked its colour and shape; ``colour_other``
    (``shape_other``) is then the share of answers naming the *other* object's colour (shape):
    does the LM tie a colour to the shape it is asked about, reading ideal tokens?
    ``tokens="tower"``: the same clips and questions, but the visual tokens are the model's own
    (each clip drawn, through its vision tower and projector, no video file): teacher-forced
    like the ideal ones, so that the difference between the two is the tower's share of a miss
    (the codebook arguments are then unused). ``swap`` (with ``tokens="tower"``): one of
    :data:`SWAPS`, the slot group replaced by its training target, or the shape slots pooled by
    object, or a :data:`ShapeSwap` callable that gives the shape slots (:func:`tower_tokens`).
    ``layout_names`` (default :data:`LAYOUTS`): layouts by :attr:`~mlb_core.train.layouts.Layout.name`
    (``bodytail3x50``), the same clip seeds at every layout.
    Besides accuracy among the candidate words, ``colour_named`` (``shape_named``) is the share of
    answers whose next token over the *whole* vocabulary is one of the candidates: what a free
    answer would name at that point, rather than a word such as " the"."""
    from mlb_core.backbones.embedded import ensure_embedded
    from mlb_core.train.vision import Codebook, lm_text, load_checkpoint

    chosen = LAYOUTS if layout_names is None else {n: layouts.parse_layout(n) for n in layout_names}
    if n_objects not in (1, 2):
        raise MLBError(f"n_objects must be 1 or 2, got {n_objects}")
    if shape_target not in ("coverage", "outline"):
        raise MLBError(f"shape_target must be 'coverage' or 'outline', not {shape_target!r}")
    if tokens not in ("ideal", "tower"):
        raise MLBError(f"tokens must be 'ideal' or 'tower', not {tokens!r}")
    if swap is not None and (tokens != "tower" or not (callable(swap) or swap in SWAPS)):
        raise MLBError(f"swap must be one of {', '.join(SWAPS)}, with the tower's tokens; got {swap!r} with {tokens!r}")

    # the LM and tokenizer of the embedded default (its vision side is not used), built on first use
    model, tokenizer, processor = load_checkpoint(source or ensure_embedded(trained=True))
    bank = scenes.VideoBank() if tokens == "tower" else None
    book = Codebook(model.get_input_embeddings(), tokenizer)
    if str(codebook) != "words":
        from safetensors.torch import load_file

        try:
            state = load_file(str(codebook))
            if "joint" in state:  # a codebook continued with joint vectors (continue_codebook)
                book = JointCodebook(model.get_input_embeddings(), tokenizer)
            book.load_state_dict(state)
        except (OSError, RuntimeError) as exc:
            raise MLBError(f"cannot read the codebook {codebook}: {str(exc).splitlines()[0]}") from None
    core = book.base if isinstance(book, JointCodebook) else book  # the joint vectors are not scaled
    with torch.no_grad():
        core.colour.mul_(scale)
        core.shape.mul_(scale if shape_scale is None else shape_scale)
        core.background.mul_(background)
    first = {w: tokenizer(" " + w, add_special_tokens=False).input_ids[0] for w in (*scenes.COLOURS, *scenes.SHAPES)}
    embed = model.get_input_embeddings()
    name = "words" if str(codebook) == "words" else Path(codebook).name
    out: dict[str, Any] = {"visual": tokens, "codebook": name if tokens == "ideal" else None,
                           "swap": swap_name(swap) if swap is not None else None,
                           "scale": scale,
                           "shape_scale": scale if shape_scale is None else shape_scale,
                           "background": background, "n_clips": n_clips, "seed": seed,
                           "n_objects": n_objects, "shape_target": shape_target,
                           "judge": "argmax over the 6 colours (3 shapes) of the next-token logits at the answer word",
                           "layouts": {}}
    t0 = time.perf_counter()
    for name, layout in chosen.items():
        rng = np.random.default_rng([scenes.HELDOUT_SEED_BASE, seed])
        right = {"colour": [0, 0], "shape": [0, 0]}
        named = {"colour": 0, "shape": 0}  # the whole vocabulary's argmax is a candidate word
        other = {"colour": 0, "shape": 0}  # answers naming the other object's colour (shape)
        with torch.no_grad():
            for i in range(n_clips):
                spec = scenes.sample_clip(int(rng.integers(1 << 31)), layout.n_frames, "heldout", n_objects, 0.0)
                if tokens == "tower":
                    visual = layouts.arrange(tower_tokens(model, processor, spec, bank, swap, shape_target), layout)
                else:
                    cover = torch.from_numpy(scenes.clip_coverage(spec))  # (T, K, 24, 24)
                    visual = layouts.arrange(book(cover, spec, shape_target), layout)
                for q in scenes.make_questions(spec, (seed, i), forms=("open",)):
                    if q.kind not in right:
                        continue
                    text = lm_text(model, tokenizer, q)
                    vocab = scenes.COLOURS if q.kind == "colour" else scenes.SHAPES
                    j = text.answer.tolist().index(first[q.truth])  # the answer word's position
                    x = torch.cat([text.prefix, visual, text.suffix, embed(text.answer[:j])])[None]
                    hidden = model.model.language_model(inputs_embeds=x).last_hidden_state[0, -1]
                    logits = model.lm_head(hidden)
                    guess, free = read_answer(logits, {w: first[w] for w in vocab})
                    named[q.kind] += int(free)
                    right[q.kind][0] += int(guess == q.truth)
                    right[q.kind][1] += 1
                    other[q.kind] += int(guess != q.truth and any(
                        guess == (o.colour if q.kind == "colour" else o.shape) for o in spec.objects))
        out["layouts"][name] = {"tokens": layout.n_tokens,
                                **{k: round(v[0] / v[1], 4) for k, v in right.items()},
                                **{f"{k}_named": round(v / right[k][1], 4) for k, v in named.items()},
                                "n": right["colour"][1]}
        if n_objects > 1:
            out["layouts"][name].update({f"{k}_other": round(v / right[k][1], 4) for k, v in other.items()})
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def read_answer(logits: torch.Tensor, ids: dict[str, int]) -> tuple[str, bool]:
    """Next-token logits (V,) and candidate words' first token ids -> the candidate with the
    highest logit, and whether it is the whole vocabulary's argmax (a free answer would say it)."""
    assert logits.dim() == 1 and ids, (tuple(logits.shape), ids)
    guess = max(ids, key=lambda w: float(logits[ids[w]]))
    return guess, int(logits.argmax()) == ids[guess]


SWAPS: tuple[str, ...] = (*SLOT_GROUPS, "shape-pooled")  # --ideal-swap: a slot group set to its targets, or
# "shape-pooled": every patch's shape slots pointed at its object's average (pool_shape_by_colour)


def swap_name(swap: str | Callable[..., Any]) -> str:
    """How a result names its swap: the name in :data:`SWAPS`, or a :data:`ShapeSwap`'s ``__name__``."""
    return swap if isinstance(swap, str) else getattr(swap, "__name__", "a callable")


def pool_shape_by_colour(act: torch.Tensor) -> torch.Tensor:
    """The shape slots of ``act`` (..., P, N_SLOTS), each patch's pointed at its object's average.

    A diagnosis of where shape is lost (docs/training-record.md, "Shape by the object"): the
    tower's shape slots, averaged over an object's patches, name its shape far more often than
    the LM does from the patches one by one. Here the objects are found by the tower's own colour
    slots, no target is used: with ``c`` the six colour slots and ``s`` the three shape slots,
    both clamped at 0, each colour's shape direction is ``d_k = sum_j c_jk s_j``, normalised to sum
    1 over the shapes; each patch keeps its shape mass ``m_i = sum(s_i)`` and gets the direction of
    its colours, ``s'_i = m_i * sum_k (c_ik / sum_k c_ik) d_k``. A patch with no colour (or a
    colour with no shape) keeps its own slots. Returns the new shape slots, (..., P, 3)."""
    from mlb_core.train.vision import N_SLOTS

    assert act.shape[-1] == N_SLOTS, act.shape
    colour = act[..., SLOT_GROUPS["colour"]].clamp(min=0)  # (..., P, 6)
    shape = act[..., SLOT_GROUPS["shape"]].clamp(min=0)  # (..., P, 3)
    pooled = torch.einsum("...pk,...ps->...ks", colour, shape)  # (..., 6, 3): each colour's shape
    total = pooled.sum(-1, keepdim=True)
    direction = torch.where(total > 0, pooled / total.clamp(min=1e-12), torch.zeros_like(pooled))
    mass = colour.sum(-1, keepdim=True)  # (..., P, 1)
    share = torch.where(mass > 0, colour / mass.clamp(min=1e-12), torch.zeros_like(colour))
    mixed = torch.einsum("...pk,...ks->...ps", share, direction)  # (..., P, 3), sums to 1 or 0
    keep = mixed.sum(-1, keepdim=True) <= 0  # no colour, or its colours carry no shape
    return torch.where(keep, act[..., SLOT_GROUPS["shape"]], shape.sum(-1, keepdim=True) * mixed)


ShapeSwap = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A diagnosis's own shape slots: ``(slots (T, P, 10), targets (T, P, 10)) -> shape slots (T, P, 3)``."""

SHAPE_SWAPS: dict[str, ShapeSwap] = {"shape-pooled": lambda act, target: pool_shape_by_colour(act)}
"""The named swaps of :data:`SWAPS` that replace the shape slots, as :data:`ShapeSwap` callables."""


def tower_tokens(model: Any, processor: Any, spec: scenes.ClipSpec, bank: scenes.VideoBank,
                 swap: str | ShapeSwap | None = None, shape_target: str = "coverage") -> torch.Tensor:
    """A clip drawn and turned into the model's own visual tokens, (T, 24, 24, D): the tower's
    configured feature layer, CLS dropped, through the whole projector (as LLaVA-NeXT does for a
    frame, without its image-newline or any cell pooling, which :mod:`~mlb_core.train.layouts`
    applies). ``swap``: one of :data:`SWAPS`; a slot group's units among the projector's ten
    (:func:`~mlb_core.train.vision.slots`) are set to the training's targets for the clip
    (:func:`~mlb_core.train.vision.slot_targets` with ``shape_target``) before its last layer;
    ``"shape-pooled"`` points each frame's shape slots at their object's average instead, with no
    target (:func:`pool_shape_by_colour`); a :data:`ShapeSwap` callable gives the shape slots from
    the tower's slots and the targets, for a diagnosis of what in them the LM misreads."""
    from mlb_core.train.saturate import slot_gains
    from mlb_core.train.vision import N_SLOTS, pixel_values, slot_targets

    frames, cover = scenes.render_clip(spec, bank)  # (T, S, S, 3) uint8, (T, K, 24, 24)
    feats = model.model.vision_tower(pixel_values(frames, processor),
                                     output_hidden_states=True).hidden_states[model.config.vision_feature_layer]
    if model.config.vision_feature_select_strategy == "default":
        feats = feats[:, 1:]  # (T, 576, H)
    proj = model.model.multi_modal_projector
    hidden = proj.act(proj.linear_1(feats))  # (T, 576, D'): the first N_SLOTS units are the slots
    shape_swap = SHAPE_SWAPS.get(swap) if isinstance(swap, str) else swap
    if shape_swap is not None:
        if slot_gains(proj, N_SLOTS):
            raise MLBError(f"the swap {swap_name(swap)} reads plain slots; these weights saturate some (saturate.py)")
        hidden = hidden.clone()
        act = hidden[..., :N_SLOTS]  # (T, P, N_SLOTS)
        target = slot_targets(torch.from_numpy(cover), spec, shape_target).reshape(len(frames), -1, N_SLOTS)
        shape = shape_swap(act.clone(), target.to(hidden.dtype))
        assert shape.shape == (*act.shape[:-1], 3), shape.shape
        hidden[..., SLOT_GROUPS["shape"]] = shape.to(hidden.dtype)
    elif swap is not None:
        target = slot_targets(torch.from_numpy(cover), spec, shape_target).reshape(len(frames), -1, N_SLOTS)
        group = torch.arange(N_SLOTS)[SLOT_GROUPS[swap]]
        hidden = hidden.clone()
        hidden[..., group] = target[..., group].to(hidden.dtype)
        for j, gain in slot_gains(proj, N_SLOTS).items():  # a saturated slot is a pair of units (saturate.py)
            if j in group:
                hidden[..., j] *= gain
                hidden[..., N_SLOTS + j] = 0
    out = proj.linear_2(hidden)  # (T, 576, D)
    side = int(np.sqrt(out.shape[1]))
    assert side * side == out.shape[1], out.shape
    return out.reshape(len(out), side, side, -1)


class JointCodebook(torch.nn.Module):
    """The training's codebook (:class:`~mlb_core.train.vision.Codebook`) plus one vector per
    (colour, shape) pair, added on every patch an object covers (weighted by the coverage): a
    patch then carries its object's colour and shape as one vector too, not only as a sum. A
    capacity check of the ideal tokens for binding (:func:`continue_codebook`); no tower makes
    these tokens."""

    def __init__(self, embed: torch.nn.Embedding, tokenizer: Any) -> None:
        from mlb_core.train.vision import Codebook

        super().__init__()
        self.base = Codebook(embed, tokenizer)
        self.joint = torch.nn.Parameter(torch.zeros(len(scenes.COLOURS), len(scenes.SHAPES), embed.weight.shape[1]))

    def forward(self, coverage: torch.Tensor, spec: scenes.ClipSpec, shape_target: str = "coverage") -> torch.Tensor:
        """coverage (T, K, 24, 24) -> (T, 24, 24, D): the base codebook's ideal tokens plus each
        object's joint vector times its coverage."""
        pairs = torch.stack([self.joint[scenes.COLOURS.index(o.colour), scenes.SHAPES.index(o.shape)]
                             for o in spec.objects])  # (K, D)
        return self.base(coverage, spec, shape_target) + torch.einsum("tkhw,kd->thwd", coverage, pairs)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """The base codebook's keys (colour, shape, background) and ``joint``."""
        return {**self.base.state_dict(), "joint": self.joint.detach()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        """Load :meth:`state_dict`'s layout; without ``joint`` (a plain codebook), it stays zero."""
        rest = {k: v for k, v in state.items() if k != "joint"}
        out = self.base.load_state_dict(rest, strict=strict)
        if "joint" in state:
            with torch.no_grad():
                self.joint.copy_(state["joint"])
        return out


def continue_codebook(out: str | Path, codebook: str | Path, p_two_objects: float = 0.6, budget_s: float = 600.0,
                      joint: bool = False, seed: int = 7, threads: int = 1, source: Any = None) -> dict[str, Any]:
    """Train a learnt codebook further on ideal tokens through the frozen LM (the training's stage
    1, :func:`~mlb_core.train.vision.stage_codebook`, at lr 3e-3 on 300-600-token layouts, the
    committed recipe's shape target) with ``p_two_objects`` of the clips showing two objects;
    ``joint``: with :class:`JointCodebook`'s (colour, shape) vectors as well. Writes the codebook
    to ``out`` (``mlb heldout --ideal --ideal-codebook OUT --ideal-objects 2`` reads it) and
    returns the steps, seconds and mean loss of the first and last 20 steps. Does more two-object
    training teach the frozen LM to tie a colour to a shape, on ideal tokens?"""
    from dataclasses import replace

    from safetensors.torch import load_file, save_file

    from mlb_core.backbones.embedded import ensure_embedded
    from mlb_core.train.vision import RECIPES, Codebook, load_checkpoint, stage_codebook

    if not 0 <= p_two_objects <= 1 or budget_s <= 0:
        raise MLBError(f"p_two_objects must be in [0, 1] and budget_s > 0, got {p_two_objects}, {budget_s}")
    torch.manual_seed(seed)
    model, tokenizer, _ = load_checkpoint(source or ensure_embedded(trained=True))
    for p in model.parameters():
        p.requires_grad_(False)
    embed = model.get_input_embeddings()
    book: torch.nn.Module = JointCodebook(embed, tokenizer) if joint else Codebook(embed, tokenizer)
    try:
        book.load_state_dict(load_file(str(codebook)))
    except (OSError, RuntimeError) as exc:
        raise MLBError(f"cannot read the codebook {codebook}: {str(exc).splitlines()[0]}") from None
    recipe = replace(RECIPES["outline"], p_two_objects=p_two_objects, lr_codebook=3e-3,
                     codebook_min_tokens=300, codebook_max_tokens=600)
    log: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with torch.enable_grad():
        stage_codebook(model, tokenizer, book, budget_s, seed, recipe, threads, log)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in book.state_dict().items()}, str(out))
    losses = [r["loss"] for r in log]
    return {"steps": len(log), "seconds": round(time.perf_counter() - t0, 1), "p_two_objects": p_two_objects,
            "joint": joint, "seed": seed, "loss_first20": round(float(np.mean(losses[:20])), 4),
            "loss_last20": round(float(np.mean(losses[-20:])), 4)}


def format_ideal(result: dict[str, Any]) -> str:
    """A plain-text table of :func:`ideal_accuracy`."""
    two = result.get("n_objects", 1) > 1
    named = result.get("swap")
    swap = ("" if not named else " with each object's shape slots pooled over its patches" if named == "shape-pooled"
            else f" with the {named} slots set to their targets" if named in SLOT_GROUPS
            else f" with the shape slots given by {named}")
    what = (f"the tower's own tokens{swap} (the clips drawn, no video file), " if result.get("visual") == "tower" else
            f"ideal tokens ({result.get('codebook', 'words')}: colour x{result['scale']:g}, "
            f"shape x{result['shape_scale']:g} on the {result.get('shape_target', 'coverage')}, "
            f"background x{result['background']:g}), ")
    lines = [what +
             f"{result['n_clips']} held-out clips a layout"
             + (" with two objects (other: the other object's word)" if two else "") + ", teacher-forced",
             f"{'layout':16s} {'tokens':>6s} {'colour':>7s} {'shape':>7s}"
             + (f" {'c other':>8s} {'s other':>8s}" if two else "")
             + f" {'c named':>8s} {'s named':>8s}  (named: a free answer's next word is a candidate)"]
    for name, r in result["layouts"].items():
        named = (f" {100 * r['colour_named']:7.0f}% {100 * r['shape_named']:7.0f}%" if "colour_named" in r
                 else f" {'-':>8s} {'-':>8s}")  # results written before the column existed
        lines.append(f"{name:16s} {r['tokens']:6d} {100 * r['colour']:6.0f}% {100 * r['shape']:6.0f}%"
                     + (f" {100 * r['colour_other']:7.0f}% {100 * r['shape_other']:7.0f}%" if two else "") + named)
    return "\n".join(lines)


def recipe_shape_target(folder: Path, hint: str = "") -> str:
    """The shape target (``coverage`` or ``outline``) of the recipe recorded in the training log
    that lies in ``folder``; ``coverage`` (the first recipes') when there is none."""
    from mlb_core.train.card import read_training_log

    summary = read_training_log(folder, required=False, hint=hint)
    recipe = (summary or {}).get("recipe") or {}
    return str(recipe.get("shape_target", "coverage")) if isinstance(recipe, dict) else "coverage"


def default_min_cover(folder: Path) -> float:
    """Which patches :func:`slot_accuracy` averages by default for the weights whose training log
    lies in ``folder``: 0.05 for weights trained with outline shape targets (their shape lives
    on partly covered patches), else 0.5 (the patches an object mostly covers)."""
    return 0.05 if recipe_shape_target(folder, hint="; pass min_cover (--min-cover)") == "outline" else 0.5


def slot_accuracy(n_clips: int = 40, seed: int = 0, source: Any = None,
                  min_cover: float | None = None) -> dict[str, Any]:
    """Per-object readout of the trained tower's slots on held-out single frames (one object,
    no compression, no LM): the argmax of the colour (shape) units averaged over the patches
    the object covers by at least ``min_cover`` (default: :func:`default_min_cover`).
    ``{colour, shape, n, confusion_shape}``, where ``confusion_shape[i][j]`` counts objects of
    shape ``SHAPES[i]`` read as ``SHAPES[j]``."""
    from mlb_core.train.vision import load_checkpoint, pixel_values, slots

    if source is None:
        from mlb_core.backbones import vision_weights
        from mlb_core.backbones.embedded import ensure_embedded

        source = ensure_embedded(trained=True)
        if min_cover is None:
            min_cover = default_min_cover(vision_weights.WEIGHTS_DIR)
    if min_cover is None:
        min_cover = default_min_cover(Path(source))
    model, _, processor = load_checkpoint(Path(source))
    n_col = len(scenes.COLOURS)
    rng = np.random.default_rng([scenes.HELDOUT_SEED_BASE, seed, 5])
    right = {"colour": 0, "shape": 0}
    confusion = np.zeros((len(scenes.SHAPES), len(scenes.SHAPES)), int)
    n = 0
    bank = scenes.VideoBank()
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(n_clips):
            spec = scenes.sample_clip(int(rng.integers(1 << 31)), 1, "heldout", 1, 0.0)
            frames, cover = scenes.render_clip(spec, bank)  # (1, S, S, 3), (1, 1, 24, 24)
            act = slots(model, pixel_values(frames, processor))[0]  # (24, 24, N_SLOTS)
            mask = torch.from_numpy(cover[0, 0]) >= min_cover  # (24, 24)
            if not bool(mask.any()):
                continue
            mean = act[mask].mean(0)  # (N_SLOTS,)
            obj = spec.objects[0]
            truth = scenes.SHAPES.index(obj.shape)
            read = int(mean[n_col:n_col + len(scenes.SHAPES)].argmax())
            right["colour"] += int(int(mean[:n_col].argmax()) == scenes.COLOURS.index(obj.colour))
            right["shape"] += int(read == truth)
            confusion[truth, read] += 1
            n += 1
    if n == 0:
        raise MLBError("no held-out object covered a patch; raise n_clips")
    return {"colour": round(right["colour"] / n, 4), "shape": round(right["shape"] / n, 4), "n": n,
            "shapes": list(scenes.SHAPES), "confusion_shape": confusion.tolist(), "min_cover": min_cover,
            "seed": seed, "seconds": round(time.perf_counter() - t0, 1)}


def format_slots(result: dict[str, Any]) -> str:
    """A plain-text summary of :func:`slot_accuracy`."""
    lines = [f"tower slots, {result['n']} held-out objects (one frame, patches covered >= {result['min_cover']:g}): "
             f"colour {100 * result['colour']:.0f}%, shape {100 * result['shape']:.0f}%",
             "shape confusion (rows: truth, columns: read as): " + " ".join(result["shapes"])]
    for name, row in zip(result["shapes"], result["confusion_shape"], strict=True):
        lines.append(f"  {name:9s} " + " ".join(f"{v:6d}" for v in row))
    return "\n".join(lines)
