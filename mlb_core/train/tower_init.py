"""A structured, learning-free initialisation of the embedded CLIP vision tower.

Trained from a random initialisation, the small CLIP ViT of the embedded default learns a
patch's colour within a hundred steps but not an object's shape, which needs the outline
across patches: a four-layer CNN learns shape from the same frames in about two minutes,
the randomly initialised ViT stays at chance for 1,500 steps (docs/training-record.md, "The
frames teach shape"). :func:`structured_init` rewrites three parts of a ``CLIPVisionModel`` in closed
form, so that its first steps start from a locality- and edge-aware tower:

* **patch embedding**: the first rows become fixed linear filters: each channel's mean, each
  channel's mean per quadrant, and signed step edges at six orientations and three offsets
  (on the luminance and on each channel); the remaining rows keep their random values;
* **position embedding**: 2-D sine-cosine positions (rows and columns, MAE style), the CLS
  position zero;
* **self-attention**: "mimetic" weights (Trockman and Kolter, *Mimetic Initialization of
  Self-Attention Layers*, ICML 2023): per head the query-key product ``W_q W_k^T`` is close to
  ``a1 Z + b1 I`` and the value-output product ``W_v W_o`` close to ``a2 Z - b2 I`` (``Z`` a
  random Gaussian matrix), so a token attends to tokens like itself (same content, nearby
  position) at the start of training, as trained ViTs' early layers do.

:func:`edge_energy_init` then turns the first encoder layer into a per-patch edge-orientation
detector (docs/training-record.md, "Shape from the outline"): its attention's output is zeroed, its MLP's first
hidden units rectify the signed step-edge responses (``|r| = relu(r) + relu(-r)``, both signs
being patch-embedding rows, with no position added to them), and a few residual dimensions
are reserved (zero in every input to them) for a read-out that :mod:`mlb_core.train.vision`
fits in closed form. :func:`colour_units` optionally turns that MLP's remaining hidden units
(the checkpoint's random weights, so small that ``quick_gelu`` is nearly linear on them) into
random nonlinear features of the patch's colour rows (channel and quadrant means): a linear
read-out can then carve colour space into the six colours, which it cannot from nearly linear
units (docs/training-record.md, "Where the one-frame misses sit").

The model stays a stock ``CLIPVisionModel``: only weight values change. Everything is drawn
from a ``torch.Generator`` seeded by ``seed``, so the initialisation is reproducible.
"""

from __future__ import annotations

import math
from typing import Any

import torch

EDGE_ANGLES = (0, 30, 60, 90, 120, 150)  # degrees
EDGE_OFFSETS = (-4.0, 0.0, 4.0)  # pixels from the patch centre
N_RESERVED = 16  # residual dimensions edge_energy_init keeps free for a read-out (>= the ten slots)


def edge_filters(patch: int, angles: tuple[int, ...] = EDGE_ANGLES,
                 offsets: tuple[float, ...] = EDGE_OFFSETS) -> torch.Tensor:
    """(len(angles) * len(offsets), patch, patch) zero-mean, unit-norm soft step edges."""
    centre = (patch - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(patch) - centre, torch.arange(patch) - centre, indexing="ij")
    out = []
    for a in angles:
        t = math.radians(a)
        d = xx * math.cos(t) + yy * math.sin(t)  # (p, p) signed distance along the normal
        for o in offsets:
            f = torch.tanh(d - o)
            f = f - f.mean()
            out.append(f / (f.norm() + 1e-9))
    return torch.stack(out).float()


def patch_filters(channels: int, patch: int) -> torch.Tensor:
    """(F, channels, patch, patch) fixed filters: channel means, channel means per quadrant,
    and signed step edges on the luminance and on each channel."""
    rows: list[torch.Tensor] = []
    for c in range(channels):
        w = torch.zeros(channels, patch, patch)
        w[c] = 1.0 / patch
        rows.append(w)
    half = patch // 2
    for c in range(channels):
        for qy in (0, 1):
            for qx in (0, 1):
                w = torch.zeros(channels, patch, patch)
                w[c, qy * half:(qy + 1) * half, qx * half:(qx + 1) * half] = 2.0 / patch
                rows.append(w)
    for e in edge_filters(patch):
        for sign in (1.0, -1.0):
            rows.append(sign * e.expand(channels, patch, patch) / math.sqrt(channels))
            for c in range(channels):
                w = torch.zeros(channels, patch, patch)
                w[c] = sign * e
                rows.append(w)
    return torch.stack(rows)


def sincos_2d(side: int, dim: int) -> torch.Tensor:
    """(side * side, dim) 2-D sine-cosine position embedding: the first half encodes the row,
    the second half the column, each with ``dim / 4`` frequencies."""
    assert dim % 4 == 0, f"dim {dim} must be a multiple of 4"
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim / 4))  # (dim/4,)
    y, x = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32),
                          indexing="ij")

    def embed(pos: torch.Tensor) -> torch.Tensor:
        arg = pos.reshape(-1, 1) * omega[None]  # (side*side, dim/4)
        return torch.cat([arg.sin(), arg.cos()], 1)

    return torch.cat([embed(y), embed(x)], 1)


def _factor(m: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B), both (d, rank), with ``A @ B.T`` the best rank-``rank`` approximation of ``m``."""
    u, s, vh = torch.linalg.svd(m)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, vh[:rank].T * root


def mimetic_attention(layer: Any, gen: torch.Generator, a1: float = 0.7, b1: float = 0.7,
                      a2: float = 0.4, b2: float = 0.4) -> None:
    """Set one CLIP self-attention block's projections so that per head ``W_q W_k^T`` is the
    rank-``head_dim`` part of ``a1 Z + b1 I``, and ``W_v W_o`` is ``a2 Z - b2 I`` (biases zero)."""
    att = layer.self_attn
    d, h = att.embed_dim, att.num_heads
    k = d // h
    with torch.no_grad():
        for i in range(h):
            z = torch.randn(d, d, generator=gen) / math.sqrt(d)
            q, kk = _factor(a1 * z + b1 * torch.eye(d), k)  # (d, k) each
            att.q_proj.weight[i * k:(i + 1) * k] = q.T
            att.k_proj.weight[i * k:(i + 1) * k] = kk.T
        z = torch.randn(d, d, generator=gen) / math.sqrt(d)
        v, o = _factor(a2 * z - b2 * torch.eye(d), d)  # x W_v^T W_o^T = x (a2 Z - b2 I)
        att.v_proj.weight[:] = v.T
        att.out_proj.weight[:] = o
        for proj in (att.q_proj, att.k_proj, att.v_proj, att.out_proj):
            if proj.bias is not None:
                proj.bias.zero_()


def clip_parts(tower: Any) -> tuple[Any, Any, Any]:
    """(embeddings, pre-layer-norm, encoder) of a ``CLIPVisionModel`` (transformers 4.x or 5.x)."""
    vm = tower.vision_model if hasattr(tower, "vision_model") else tower
    return vm.embeddings, vm.pre_layrnorm, vm.encoder


def structured_init(tower: Any, seed: int = 0) -> int:
    """Rewrite a ``CLIPVisionModel``'s patch filters, positions and attention in place (module
    docstring). Returns the number of patch-embedding rows set to fixed filters."""
    emb, _, encoder = clip_parts(tower)
    gen = torch.Generator().manual_seed(seed)
    conv = emb.patch_embedding  # weight (D, C, p, p)
    dim, channels, patch, _ = conv.weight.shape
    filters = patch_filters(channels, patch)[:dim]  # (F, C, p, p)
    pos = emb.position_embedding.weight  # (1 + N, D)
    side = math.isqrt(pos.shape[0] - 1)
    assert side * side == pos.shape[0] - 1, f"{pos.shape[0] - 1} patch positions are not a square grid"
    with torch.no_grad():
        conv.weight[:len(filters)] = filters
        pos[1:] = sincos_2d(side, pos.shape[1])
        pos[0] = 0
    for layer in encoder.layers:
        mimetic_attention(layer, gen)
    return len(filters)


def n_colour_rows(channels: int) -> int:
    """How many of :func:`patch_filters`' rows come first and carry colour: each channel's mean,
    then each channel's mean per quadrant."""
    return channels + 4 * channels


def edge_rows(conv: Any, n_reserved: int) -> list[int]:
    """The rows of a patch embedding ``conv`` that :func:`structured_init` gives signed step
    edges: after the colour rows, up to the fixed filters' end or the reserved dimensions."""
    dim, channels, patch, _ = conv.weight.shape
    n_fixed = len(patch_filters(channels, patch)[:dim])
    return list(range(n_colour_rows(channels), min(n_fixed, dim - n_reserved)))


def colour_units(tower: Any, colour_rows: torch.Tensor, gain: float = 3.0, seed: int = 0,
                 n_reserved: int = N_RESERVED) -> list[int]:
    """After :func:`edge_energy_init`, make the first layer's MLP units beyond the rectified edges
    random features of the patch's colour rows (module docstring). ``colour_rows`` (N, C + 4C):
    those rows of the layer's second layer norm's output on sample patches; each unit gets a
    Gaussian direction over them, scaled by their spread so that its pre-activation has a standard
    deviation of about ``gain``, and a bias that puts its bend at one sampled patch (so the units'
    bends fall where patches are). Returns the units' indices; the MLP's second layer is unchanged
    (zero into the reserved dimensions until a read-out is fitted)."""
    emb, _, encoder = clip_parts(tower)
    n_colour = n_colour_rows(emb.patch_embedding.weight.shape[1])
    assert colour_rows.ndim == 2 and colour_rows.shape[1] == n_colour, (colour_rows.shape, n_colour)
    n_edges = len(edge_rows(emb.patch_embedding, n_reserved))
    fc1 = encoder.layers[0].mlp.fc1
    units = list(range(n_edges, fc1.out_features))
    gen = torch.Generator().manual_seed(seed)
    spread = colour_rows.std(0).clamp(min=1e-6)  # (C + 4C,)
    w = torch.randn(len(units), n_colour, generator=gen) / spread / math.sqrt(n_colour) * gain  # (U, C + 4C)
    at = colour_rows[torch.randint(len(colour_rows), (len(units),), generator=gen)]  # (U, C + 4C)
    with torch.no_grad():
        fc1.weight[units] = 0
        fc1.weight[units, :n_colour] = w.to(fc1.weight.dtype)
        fc1.bias[units] = -(w * at).sum(1).to(fc1.bias.dtype)
    return units


def edge_energy_init(tower: Any, n_reserved: int = N_RESERVED, gain: float = 2.0) -> list[int]:
    """Make the first encoder layer of a :func:`structured_init` tower a per-patch edge-energy
    layer (module docstring). Returns the reserved residual dimensions (the last
    ``n_reserved``): zero after the embedding, the pre-layer-norm and the attention, so after
    the first layer they hold exactly what the MLP's second linear layer writes there (zero
    until a read-out is fitted)."""
    emb, pre, encoder = clip_parts(tower)
    conv = emb.patch_embedding
    dim = conv.weight.shape[0]
    rows = edge_rows(conv, n_reserved)  # (+, -) signed edges
    reserved = list(range(dim - n_reserved, dim))
    layer = encoder.layers[0]
    fc1, fc2 = layer.mlp.fc1, layer.mlp.fc2
    assert fc1.out_features >= len(rows), f"{fc1.out_features} hidden units < {len(rows)} edge rows"
    with torch.no_grad():
        conv.weight[reserved] = 0
        if conv.bias is not None:
            conv.bias[reserved] = 0
        emb.position_embedding.weight[:, reserved] = 0
        emb.position_embedding.weight[:, rows] = 0  # the rectified responses carry no position
        emb.class_embedding[reserved] = 0
        pre.weight[reserved] = 0
        pre.bias[reserved] = 0
        layer.self_attn.out_proj.weight.zero_()  # no mixing: the edge responses stay the patch's own
        layer.self_attn.out_proj.bias.zero_()
        fc1.weight[:len(rows)] = 0
        fc1.bias[:len(rows)] = 0
        for unit, row in enumerate(rows):
            fc1.weight[unit, row] = gain  # quick_gelu(gain * r): about relu(r), its sign twin relu(-r)
        fc2.weight[reserved] = 0
        fc2.bias[reserved] = 0
    return reserved
