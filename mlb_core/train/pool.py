"""Pooled shape: the tower's later layers give every patch of an object that object's shape
(docs/training-record.md, "A tower that pools shape").

The edge tower's first layer (:func:`mlb_core.train.tower_init.edge_energy_init`, a learnt slot
read-out) writes a patch's ten slot pre-activations into reserved residual dimensions. Its
three shape slots say what the patch's *own* pixels show of an outline, and the frozen LM reads
that patch-by-patch mixture worse than one shape an object: with the slots of each patch made
one-hot on the shape pooled over its object, the committed weights named 43 of 48 held-out
one-frame shapes teacher-forced, against 38 from their own slots (the record's "Shape by the
object"). A stock ``CLIPVisionModel`` can pool only by softmax attention over the frame's
patches, and softmax attention pools an object well only when its keys are saturated colours.
So :func:`build_pool` adds two layers' worth of work after the first, each a stock CLIP encoder
layer with only its weight values set:

* **layer 2, saturate** (the checkpoint's second layer): its attention's output is zeroed; its MLP
  writes, into free reserved dimensions, each colour slot made a clamp (two ``quick_gelu`` units,
  ``(act(g u) - act(g u - g)) / g``, ``u = 4 (a z + b) - 0.4`` with ``a, b`` fitted by least
  squares to "this patch touches an object of this colour", :data:`KEY_SLOPE`), and each shape
  slot rectified (one unit, ``act(g z) / g``);
* **layer 3, pool** (a third layer appended to the tower): one attention head whose queries and
  keys are the saturated colours times ``sqrt(gain)``, so that a patch attends to the patches of
  its own colour, and whose values are the rectified shapes, written into three more free
  dimensions (the other heads' outputs are zeroed); its MLP is the learnt *sharpening*: fitted
  like the first layer's read-out (:func:`mlb_core.train.readout.learn_readout`, every unit free),
  from the normed reserved dimensions alone (the patch's own slots and its object's pooled shape:
  from the whole residual the fit found nothing beyond its ridge start) to the outline shape
  targets after the projector's GELU, written into three last dimensions.

The projector's three shape units then read those last dimensions; the colour and background
units still read the first layer's. Layer norm divides every dimension by the patch's residual
scale, which varies over a frame's patches (1.45-2.12 on the committed tower) and is largest on
the outline patches, the ones that carry shape: a pooling head reading it would weigh them least.
So layer 2 also writes a constant 64 into one reserved dimension of every token, which makes
layer 3's scale about 4.4 on every patch (within a few percent); the clamps are fitted on the
normed values layer 2's MLP reads, and layer 3's head is set for the median scale. Everything a fit draws is seeded;
no LM is involved, and no method's selection: the fits see single rendered training frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

from . import scenes
from .readout import learn_readout, slots_of
from .saturate import clamp_pair, fit_saturation
from .tower_init import clip_parts

N_COLOURS, N_SHAPES = len(scenes.COLOURS), len(scenes.SHAPES)
# the reserved dimensions a pooled tower uses, after the first layer's ten slots (offsets into
# the reserved list): saturated colours, rectified shapes, pooled shapes, sharpened shapes
KEYS = slice(10, 16)
VALUES = slice(16, 19)
POOLED = slice(19, 22)
SHARP = slice(22, 25)
ZERO = 25  # a reserved dimension nothing writes: layer norm maps it to -mean / scale, the reference
# that the fitted units subtract, so that they read a dimension's value over the scale alone
FLAG = 26  # 1 in every patch's position embedding, 0 in the class token's (:func:`mark_patches`)
CLS = 27  # layer 2 writes 1 there on the class token, 0 on patches: layer 3's head ignores it
FLAG_REF = 28  # 0 in every position embedding: the pre-layer norm maps it to -mean / scale, so that
# FLAG - FLAG_REF is 1 / scale on a patch (> 0) and exactly 0 on the class token
STEADY = 29  # layer 2 writes STEADY_VALUE there on every token (module docstring)
STEADY_VALUE = 64.0
N_POOL_RESERVED = 30  # reserved dimensions a pooled tower needs at least
CLS_PENALTY = 30.0  # what layer 3's head subtracts from its logit on the class token
KEY_SLOPE, KEY_SHIFT = 4.0, -0.4  # keys clamp(4 u - 0.4): u, the fitted clamp, is graded on an
# object's outline patches (about 0.4), and softmax pooling then settles on the interior patches,
# which carry no shape; saturated from u = 0.35, outline and interior weigh alike (the record's
# "Shape by the object": this form pooled 96-97.5% of held-out objects at gains 2-32)
RECTIFY_GAIN = 8.0  # act(g z) / g: about relu(z) for quick_gelu
ONEHOT_WALL = 8.0  # what sharpen="onehot" takes off a shape that is not the pooled argmax (before GELU)
MARGIN_SATURATION = 0.25  # sharpen="onehot": a pair's clamp saturates at this share of the median margin
SHARPENINGS = ("learnt", "onehot")  # Recipe.pool_sharpen


def mark_patches(tower: Any, dims: list[int]) -> None:
    """Put a 1 in reserved dimension ``dims[FLAG]`` of every patch's position embedding (0 in the
    class token's) and let the pre-layer norm pass it, so that later layers can tell the class
    token from the patches: after the first layer's read-out the class token carries slot values
    like any patch (a large shape value, on seed 0), and a pooling head that attended to it would
    pool them into every object. Call it before the first layer's read-out is fitted: the flag
    changes what the pre-layer norm divides by."""
    emb, pre, _ = clip_parts(tower)
    with torch.no_grad():
        emb.position_embedding.weight[1:, dims[FLAG]] = 1.0
        emb.position_embedding.weight[0, dims[FLAG]] = 0.0
        emb.class_embedding[dims[FLAG]] = 0.0
        for d in (dims[FLAG], dims[FLAG_REF]):
            pre.weight[d] = 1.0
            pre.bias[d] = 0.0


def append_layer(tower: Any) -> Any:
    """Append one encoder layer to a ``CLIPVisionModel`` (a copy of the last one's class, fresh
    weights: every projection and MLP weight zero, layer norms the identity), and count it in the
    config. Returns the new layer."""
    _, _, encoder = clip_parts(tower)
    layer = type(encoder.layers[-1])(tower.config)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "layer_norm" in name:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                p.zero_()
    layer.to(next(encoder.layers[-1].parameters()).device)
    encoder.layers.append(layer)
    tower.config.num_hidden_layers = len(encoder.layers)
    return layer


def clear_mlp(layer: Any) -> None:
    """Zero an encoder layer's MLP (both linear layers, weights and biases): it adds nothing."""
    with torch.no_grad():
        for lin in (layer.mlp.fc1, layer.mlp.fc2):
            lin.weight.zero_()
            lin.bias.zero_()


def clear_layer(layer: Any) -> None:
    """Make an encoder layer the identity on the residual stream: its attention's output
    projection and its MLP zero (weights and biases)."""
    clear_mlp(layer)
    with torch.no_grad():
        layer.self_attn.out_proj.weight.zero_()
        layer.self_attn.out_proj.bias.zero_()


def set_saturate(layer: Any, dims: list[int], a: torch.Tensor, b: torch.Tensor, gain: float,
                 flag: tuple[float, float] = (0.0, 1.0)) -> None:
    """Layer 2's MLP (module docstring): units ``2c, 2c + 1`` clamp colour slot ``c``
    (``clamp(a_c z_c + b_c, 0, 1)``, ``z_c`` the normed reserved dimension ``dims[c]``) into
    ``dims[KEYS][c]``; unit ``12 + s`` rectifies shape slot ``s`` into ``dims[VALUES][s]``; units
    15, 16 write ``clamp(2 (m - f) / (m - f_cls), 0, 1)`` into ``dims[CLS]``, ``f`` the normed flag
    less the normed ``dims[FLAG_REF]``,
    ``flag = (f_cls, m)`` the class token's flag and the midpoint between it and the patches' least:
    1 on the class token, 0 on every patch; its bias writes :data:`STEADY_VALUE` into ``dims[STEADY]``.

    Args:
        dims: the reserved residual dimensions (at least :data:`N_POOL_RESERVED`).
        a, b: ``(N_COLOURS,)`` from :func:`mlb_core.train.saturate.fit_saturation` on the normed
            values, each less the normed reference dimension ``dims[ZERO]`` (layer norm's mean removed).
        gain: the clamp pairs' gain.
    """
    assert len(dims) >= N_POOL_RESERVED, f"{len(dims)} reserved dimensions < {N_POOL_RESERVED}"
    assert a.shape == b.shape == (N_COLOURS,), (a.shape, b.shape)
    clear_layer(layer)
    fc1, fc2 = layer.mlp.fc1, layer.mlp.fc2
    assert fc1.out_features >= 2 * N_COLOURS + N_SHAPES, fc1.out_features
    keys, values = dims[KEYS], dims[VALUES]
    with torch.no_grad():
        for c in range(N_COLOURS):
            for unit, shift in ((2 * c, 0.0), (2 * c + 1, gain)):
                fc1.weight[unit, dims[c]] = float(a[c]) * gain
                fc1.weight[unit, dims[ZERO]] = -float(a[c]) * gain
                fc1.bias[unit] = float(b[c]) * gain - shift
            fc2.weight[keys[c], 2 * c] = 1 / gain
            fc2.weight[keys[c], 2 * c + 1] = -1 / gain
        for s in range(N_SHAPES):
            unit = 2 * N_COLOURS + s
            fc1.weight[unit, dims[N_COLOURS + s]] = RECTIFY_GAIN
            fc1.weight[unit, dims[ZERO]] = -RECTIFY_GAIN
            fc2.weight[values[s], unit] = 1 / RECTIFY_GAIN
        f_cls, mid = flag
        slope = 2 / (mid - f_cls)  # u = slope (mid - f): 2 on the class token, below 0 on patches
        for unit, shift in ((15, 0.0), (16, gain)):
            fc1.weight[unit, dims[FLAG]] = -slope * gain
            fc1.weight[unit, dims[FLAG_REF]] = slope * gain
            fc1.bias[unit] = slope * mid * gain - shift
        fc2.weight[dims[CLS], 15] = 1 / gain
        fc2.weight[dims[CLS], 16] = -1 / gain
        fc2.bias[dims[STEADY]] = STEADY_VALUE


def set_pool_attention(layer: Any, dims: list[int], gain: float, scale: float, cls_scale: float = 1.0) -> None:
    """Layer 3's attention (module docstring): head 0's queries and keys are the saturated colours
    (``dims[KEYS]``, normed by the layer's first layer norm) times ``sqrt(gain * sqrt(head_dim)) *
    scale`` (the head divides its logits by ``sqrt(head_dim)``), so that its logits are
    ``gain * <k_i, k_j>`` for two patches of residual scale ``scale``; its
    values the rectified shapes (``dims[VALUES]``) times ``scale``, written by the output
    projection into ``dims[POOLED]``. A seventh query-key dimension, a constant query against
    ``-dims[CLS]``, takes :data:`CLS_PENALTY` off the logit of the class token (residual scale
    ``cls_scale``) and nothing off a patch's. Every other head's output is zeroed."""
    att = layer.self_attn
    head_dim = att.embed_dim // att.num_heads
    alpha = math.sqrt(gain * math.sqrt(head_dim)) * scale
    with torch.no_grad():
        for proj in (att.q_proj, att.k_proj, att.v_proj, att.out_proj):
            proj.weight.zero_()
            proj.bias.zero_()
        for c, d in enumerate(dims[KEYS]):
            for proj in (att.q_proj, att.k_proj):
                proj.weight[c, d] = alpha
                proj.weight[c, dims[ZERO]] = -alpha
        beta = math.sqrt(CLS_PENALTY * math.sqrt(head_dim) * cls_scale)
        att.q_proj.bias[N_COLOURS] = beta
        att.k_proj.weight[N_COLOURS, dims[CLS]] = -beta
        att.k_proj.weight[N_COLOURS, dims[ZERO]] = beta
        for s, (d_in, d_out) in enumerate(zip(dims[VALUES], dims[POOLED], strict=True)):
            att.v_proj.weight[s, d_in] = scale
            att.v_proj.weight[s, dims[ZERO]] = -scale
            att.out_proj.weight[d_out, s] = 1.0


def sharpen_inputs(dims: list[int]) -> list[int]:
    """The residual dimensions layer 3's MLP reads: the first layer's slots, the saturated colours,
    the rectified and the pooled shapes, and the reference dimension."""
    return [*dims[:POOLED.stop], dims[ZERO]]


def set_sharpen(layer: Any, dims: list[int], params: dict[str, torch.Tensor]) -> None:
    """Layer 3's MLP: ``params`` from :func:`mlb_core.train.readout.learn_readout` (every unit
    free, on the columns :func:`sharpen_inputs`), its read-out written into ``dims[SHARP]``;
    every other weight zero."""
    fc1, fc2 = layer.mlp.fc1, layer.mlp.fc2
    dev = fc1.weight.device
    with torch.no_grad():
        fc1.weight.zero_()
        fc1.weight[:, sharpen_inputs(dims)] = params["w1"].to(dev)
        fc1.bias.copy_(params["b1"].to(dev))
        fc2.weight.zero_()
        fc2.bias.zero_()
        fc2.weight[dims[SHARP]] = params["w2"].to(dev)
        fc2.bias[dims[SHARP]] = params["b2"].to(dev)


def set_onehot(layer: Any, projector: Any, dims: list[int], shape_units: list[int], margin_gain: float,
               mass: tuple[float, float], clamp_gain: float) -> None:
    """Layer 3's MLP and the projector's shape units as a closed-form sharpening (``sharpen="onehot"``):
    for each ordered pair of shapes ``(s, o)`` two units clamp ``margin_gain (p_s - p_o)`` to [0, 1]
    (``p`` the pooled shapes as the layer's second layer norm gives them), and ``dims[SHARP][s]``
    gets :data:`ONEHOT_WALL` times (the two clamps of ``s`` less 2): 0 where ``s`` is the pooled
    argmax by a margin, ``-ONEHOT_WALL`` or less elsewhere. Projector shape unit ``s`` reads
    ``dims[SHARP][s] + k m - d``, ``m`` the patch's own rectified shape values summed (its outline
    mass) and ``(k, d) = mass``: after the projector's GELU, about the patch's own mass on the
    pooled argmax and 0 on the other two shapes."""
    clear_mlp(layer)  # the MLP alone: the layer's attention pools
    fc1, fc2 = layer.mlp.fc1, layer.mlp.fc2
    lin1 = projector.linear_1
    pairs = [(s, o) for s in range(N_SHAPES) for o in range(N_SHAPES) if o != s]
    assert fc1.out_features >= 2 * len(pairs), fc1.out_features
    k, d = mass
    with torch.no_grad():
        for i, (s, o) in enumerate(pairs):
            for unit, shift in ((2 * i, 0.0), (2 * i + 1, clamp_gain)):
                fc1.weight[unit, dims[POOLED][s]] = margin_gain * clamp_gain
                fc1.weight[unit, dims[POOLED][o]] = -margin_gain * clamp_gain
                fc1.bias[unit] = -shift
            fc2.weight[dims[SHARP][s], 2 * i] = ONEHOT_WALL / clamp_gain
            fc2.weight[dims[SHARP][s], 2 * i + 1] = -ONEHOT_WALL / clamp_gain
        for s in range(N_SHAPES):
            fc2.bias[dims[SHARP][s]] = -(N_SHAPES - 1) * ONEHOT_WALL
        for unit, s in zip(shape_units, range(N_SHAPES), strict=True):
            lin1.weight[unit] = 0
            lin1.weight[unit, dims[SHARP][s]] = 1.0
            lin1.weight[unit, dims[VALUES]] = k
            lin1.bias[unit] = -d


def fit_mass(m: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, steps: int = 600,
             lr: float = 0.05) -> tuple[float, float]:
    """``(k, d)`` minimising the weighted squared error between ``GELU(k m - d)`` and ``target``
    (all ``(N,)``): full-batch Adam from ``k = 1, d = 0``, deterministic for given inputs."""
    k = torch.ones((), requires_grad=True)
    d = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([k, d], lr=lr)
    for _ in range(steps):
        loss = ((torch.nn.functional.gelu(k * m - d) - target).pow(2) * weight).sum() / weight.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(k.detach()), float(d.detach())


def point_shape_units(projector: Any, dims: list[int], shape_units: list[int]) -> None:
    """The projector's shape slot units read the sharpened dimensions (weight 1, bias 0)."""
    lin1 = projector.linear_1
    with torch.no_grad():
        for unit, d in zip(shape_units, dims[SHARP], strict=True):
            lin1.weight[unit] = 0
            lin1.weight[unit, d] = 1.0
            lin1.bias[unit] = 0


Batches = Callable[[int, str], Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]


def _gather(tower: Any, layer_index: int, batches: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
            ) -> dict[str, Any]:
    """Layer ``layer_index``'s MLP input (its second layer norm's output) over the batches,
    flattened to patches: ``x`` (N, D), with the slot targets ``y`` (N, 10), the patch weights ``w``
    (N,) and the median residual ``scale`` of the layer's input (``hidden_states[layer_index]``);
    ``cls_x`` (D,) and ``cls_scale`` the same of the class token (which does not depend on the
    frame: no layer before mixes tokens)."""
    xs, ys, ws, scales = [], [], [], []
    layer = clip_parts(tower)[2].layers[layer_index]
    caught: dict[str, torch.Tensor] = {}
    handle = layer.layer_norm2.register_forward_hook(lambda m, i, o: caught.__setitem__("x", o))
    try:
        for pix, target, weight in batches:
            with torch.no_grad():
                hidden = tower(pix, output_hidden_states=True).hidden_states[layer_index]  # (n, 1 + P, D)
            scales.append(hidden[:, 1:].std(-1, unbiased=False).reshape(-1).cpu())  # what layer norm divides by
            xs.append(caught["x"][:, 1:].reshape(-1, hidden.shape[-1]).cpu())
            cls_x, cls_scale = caught["x"][0, 0].cpu(), float(hidden[0, 0].std(unbiased=False))
            ys.append(target.reshape(-1, target.shape[-1]))
            ws.append(weight.reshape(-1))
    finally:
        handle.remove()
    return {"x": torch.cat(xs).float(), "y": torch.cat(ys).float(), "w": torch.cat(ws).float(),
            "scale": float(torch.cat(scales).median()), "cls_x": cls_x.float(), "cls_scale": cls_scale}


def build_pool(tower: Any, projector: Any, dims: list[int], batches: Batches, shape_units: list[int], seed: int,
               gain: float, clamp_gain: float, n_saturate: int, n_sharpen: int, steps: int, lr: float,
               ridge: float, sharpen: str = "learnt") -> dict[str, Any]:
    """Turn an edge tower with a fitted first-layer read-out into a pooled tower (module docstring).

    Args:
        tower: the ``CLIPVisionModel`` (two layers; a third is appended).
        projector: the LLaVA projector whose shape units are re-pointed.
        dims: the reserved residual dimensions (at least :data:`N_POOL_RESERVED`); ``dims[:10]``
            carry the first layer's slots.
        batches: ``batches(n, part)`` yields ``(pixels (b, 3, H, W), slot targets (b, P, 10),
            patch weights (b, P))`` for ``n`` fresh training frames of the fit ``part``
            (``"saturate"`` or ``"sharpen"``), each part its own seeded stream.
        shape_units: the projector's three shape slot units.
        gain: the pooling head's gain on the saturated colours' inner product.
        clamp_gain: the clamp pairs' gain.
        n_saturate, n_sharpen: frames of the clamp fit and of the sharpening fit.
        steps, lr, ridge: the learnt sharpening fit's Adam steps, learning rate and ridge start.
        sharpen: ``"learnt"`` (layer 3's MLP fitted to the outline targets) or ``"onehot"``
            (:func:`set_onehot`, with its margin gain and mass fitted on the same frames).

    Returns:
        A log row: the clamps' ``a, b``, the keys' mean on and off their colour's patches, the
        residual scale the head is set for, and the sharpening fit's R^2 and losses.
    """
    assert len(dims) >= N_POOL_RESERVED, f"{len(dims)} reserved dimensions < {N_POOL_RESERVED}"
    _, _, encoder = clip_parts(tower)
    assert len(encoder.layers) == 2, f"a pooled tower starts from two layers, not {len(encoder.layers)}"
    second = encoder.layers[1]
    act = second.mlp.activation_fn
    clear_layer(second)
    third = append_layer(tower)

    # layer 2: the clamps, fitted on what its MLP reads (hidden state 1: the first layer's output)
    got = _gather(tower, 1, batches(n_saturate, "saturate"))
    x2, target, weight = got["x"], got["y"], got["w"]
    z = x2[:, dims[:N_COLOURS]] - x2[:, dims[ZERO]][:, None]  # (N, 6): the slots over the scale
    on = (target[:, :N_COLOURS] >= 0.05).float()  # (N, 6): the patch touches an object of the colour
    a, b = fit_saturation(z, on, weight, clamp_gain, act=act)
    a, b = KEY_SLOPE * a, KEY_SLOPE * b + KEY_SHIFT
    flag = x2[:, dims[FLAG]] - x2[:, dims[FLAG_REF]]  # (N,): every patch's normed flag
    cls_flag = float(got["cls_x"][dims[FLAG]] - got["cls_x"][dims[FLAG_REF]])
    least = float(flag.min())
    if not least > cls_flag:
        raise ValueError(f"the patch flag does not tell patches ({least:.3f} and up) from the class token "
                         f"({cls_flag:.3f}): was mark_patches called before the read-out?")
    set_saturate(second, dims, a, b, clamp_gain, (cls_flag, (least + cls_flag) / 2))
    keys = clamp_pair(z * a + b, clamp_gain, act)  # (N, 6): what layer 2 writes

    # layer 3: the pooling head, set for the residual scale after layer 2, then the learnt sharpening
    got = _gather(tower, 2, batches(8, "scale"))
    scale, cls_scale = got["scale"], got["cls_scale"]
    cls_mark = float(got["cls_x"][dims[CLS]] - got["cls_x"][dims[ZERO]]) * got["cls_scale"]
    patch_mark = float((got["x"][:, dims[CLS]] - got["x"][:, dims[ZERO]]).abs().max()) * scale
    set_pool_attention(third, dims, gain, scale, cls_scale)
    got = _gather(tower, 2, batches(n_sharpen, "sharpen"))
    row = {"stage": "pool", "a": [round(float(v), 4) for v in a], "b": [round(float(v), 4) for v in b],
           "keys_on": round(float(keys[on.bool()].mean()), 4), "keys_off": round(float(keys[~on.bool()].mean()), 4),
           "scale": round(scale, 4), "gain": gain, "flag_patches_least": round(least, 4),
           "flag_cls": round(cls_flag, 4), "cls_mark": round(cls_mark, 4), "patch_mark_max": round(patch_mark, 4),
           "saturate_frames": n_saturate, "sharpen_frames": n_sharpen, "sharpen": sharpen}
    if sharpen == "onehot":
        return row | _onehot(third, projector, dims, shape_units, got, scale, clamp_gain)
    # (N, 23): the MLP reads these alone, so that the few dimensions that carry the object's shape
    # are not drowned in the patch's other 230
    x3, target, weight = got["x"][:, sharpen_inputs(dims)], got["y"], got["w"]
    y = target[:, N_COLOURS:N_COLOURS + N_SHAPES]  # (N, 3)
    units = torch.nn.Linear(x3.shape[1], third.mlp.fc1.out_features)  # only its size is read (no fixed units)
    params, fit = learn_readout(x3, y, weight, units, act, 0, seed, steps, lr, ridge=ridge)
    set_sharpen(third, dims, params)
    point_shape_units(projector, dims, shape_units)
    with torch.no_grad():
        pred = slots_of(x3, params["w1"], params["b1"], params["w2"], params["b2"], act)
    r2 = 1 - float(((pred - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())
    return row | {"sharpen_r2": round(r2, 4), **{f"sharpen_{k}": v for k, v in fit.items()}}


def _onehot(third: Any, projector: Any, dims: list[int], shape_units: list[int], got: dict[str, Any],
            scale: float, clamp_gain: float) -> dict[str, Any]:
    """``sharpen="onehot"``: the margin gain from the pooled shapes' median margin on outline
    patches, the mass fit from the patches' own rectified values, then :func:`set_onehot`."""
    x, target, weight = got["x"], got["y"], got["w"]
    y = target[:, N_COLOURS:N_COLOURS + N_SHAPES]  # (N, 3) outline shape targets
    outline = y.sum(-1) > 0.5
    if not outline.any():
        raise ValueError("the sharpening frames have no outline patch (shape target above 0.5) to set the margin by")
    pooled = x[:, dims[POOLED]]  # (N, 3): normed; differences cancel layer norm's mean
    top2 = pooled[outline].topk(2, -1).values  # (n, 2)
    margin = float((top2[:, 0] - top2[:, 1]).median())
    if not margin > 0:
        raise ValueError(f"the pooled shapes do not differ on the outline patches (median margin {margin})")
    margin_gain = 1 / (MARGIN_SATURATION * max(margin, 1e-6))
    # (N,): the patch's own mass as the projector reads it (raw; layer 3's residual scale is steady)
    m = (x[:, dims[VALUES]] - x[:, dims[ZERO]][:, None]).sum(-1) * scale
    k, d = fit_mass(m, y.sum(-1), weight)
    set_onehot(third, projector, dims, shape_units, margin_gain, (k, d), clamp_gain)
    hits = float((pooled[outline].argmax(-1) == y[outline].argmax(-1)).float().mean())
    return {"margin_median": round(margin, 5), "margin_gain": round(margin_gain, 2), "mass_k": round(k, 4),
            "mass_d": round(d, 4), "outline_argmax_accuracy": round(hits, 4)}
