"""Method parameters: one frozen dataclass and its named presets.

Values follow docs/method.md, "Parameters": fields marked [paper] are fixed by the paper's
figure captions, the rest are our reading and can be overridden from ``params.yaml``.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any

from mlb_core.errors import MLBError

POOL_MODES = ("weighted", "max", "avg")
TAIL_MODES = ("none", "pool", "gapool")


@dataclass(frozen=True)
class MLBParams:
    """Parameters of LLaVA-MLB (SegAttn + GAPool + VSTail) and of the shared harness.

    Attributes:
        n_frames: frames sampled uniformly from the video [ours: 50, as SF-LLaVA].
        segment_frames: frames per SegAttn segment [paper: 5, Fig. 4].
        score_layer: 0-based decoder layer whose last-query attention scores tokens
            [paper: the 3rd layer, i.e. index 2].
        grid: GAPool cell size ``(gh, gw)`` in tokens; one token per cell [ours: 3x3].
        pool_mode: ``weighted`` (attention-weighted cell mean), ``max`` (top token of the
            cell) or ``avg`` (attention-blind mean).
        tail_mode: VSTail: ``none``, ``pool`` (average pooling) or ``gapool``.
        tail_grid: output size ``(th, tw)`` of every frame's VSTail summary [ours: 2x2].
        max_new_tokens: greedy decoding length of the answer.
        budget: visual-token budget of the attention-blind / top-k baselines; ``None``
            means "the number of tokens the MLB pooling keeps", so methods compare at
            equal budgets.
    """

    n_frames: int = 50
    segment_frames: int = 5
    score_layer: int = 2
    grid: tuple[int, int] = (3, 3)
    pool_mode: str = "weighted"
    tail_mode: str = "pool"
    tail_grid: tuple[int, int] = (2, 2)
    max_new_tokens: int = 48
    budget: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        for name in ("n_frames", "segment_frames", "score_layer", "max_new_tokens"):
            object.__setattr__(self, name, _check_int(name, getattr(self, name)))
        if self.budget is not None:
            object.__setattr__(self, "budget", _check_int("budget", self.budget))
        for name in ("pool_mode", "tail_mode"):
            if not isinstance(getattr(self, name), str):
                raise MLBError(f"{name} must be a string, got {getattr(self, name)!r}")
        for name in ("grid", "tail_grid"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
                raise MLBError(f"{name} must be two positive integers like (3, 3), got {value!r}")
            for g in value:
                _check_int(name, g)
        object.__setattr__(self, "grid", tuple(int(g) for g in self.grid))
        object.__setattr__(self, "tail_grid", tuple(int(g) for g in self.tail_grid))
        if self.n_frames < 1:
            raise MLBError(f"n_frames must be >= 1, got {self.n_frames}")
        if self.segment_frames < 1:
            raise MLBError(f"segment_frames must be >= 1, got {self.segment_frames}")
        if self.n_frames % self.segment_frames:
            raise MLBError(
                f"segment_frames={self.segment_frames} does not divide n_frames={self.n_frames}"
            )
        if self.score_layer < 0:
            raise MLBError(f"score_layer must be >= 0, got {self.score_layer}")
        for name in ("grid", "tail_grid"):
            value = getattr(self, name)
            if len(value) != 2 or min(value) < 1:
                raise MLBError(f"{name} must be two positive integers, got {list(value)}")
        if self.pool_mode not in POOL_MODES:
            raise MLBError(f"pool_mode must be one of {POOL_MODES}, got {self.pool_mode!r}")
        if self.tail_mode not in TAIL_MODES:
            raise MLBError(f"tail_mode must be one of {TAIL_MODES}, got {self.tail_mode!r}")
        if self.max_new_tokens < 1:
            raise MLBError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.budget is not None and self.budget < 1:
            raise MLBError(f"budget must be >= 1 or null, got {self.budget}")

    def replace(self, **changes: Any) -> MLBParams:
        """A copy with ``changes`` applied (validated again)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise MLBError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["grid"], d["tail_grid"] = list(self.grid), list(self.tail_grid)
        return d


def _check_int(name: str, value: Any) -> int:
    """An integer (numpy's too), not a bool, a float (``4.0``) or a string (``"abc"``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise MLBError(f"{name} must be an integer, got {value!r}")
    return int(value)


PRESETS: dict[str, MLBParams] = {
    # The paper-scale default: 50 frames, 10 segments of 5, GAPool 3x3 -> 3200 tokens,
    # VSTail 2x2 -> 200 tokens: 3400 visual tokens (SF-LLaVA uses 3680).
    "mlb": MLBParams(),
    # For laptop CPUs: 20 frames, 4 segments -> 1280 + 80 = 1360 visual tokens.
    "cpu": MLBParams(n_frames=20, max_new_tokens=24),
    # For unit tests on tiny models.
    "tiny": MLBParams(n_frames=4, segment_frames=2, score_layer=1, grid=(2, 2),
                      tail_grid=(1, 1), max_new_tokens=4),
}


def get_preset(name: str, **overrides: Any) -> MLBParams:
    """The preset ``name`` with ``overrides`` applied; a clear error for unknown names."""
    if name not in PRESETS:
        raise MLBError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


def segment_frames_for(n_frames: int, most: int = 5) -> int:
    """The largest segment length <= ``most`` that divides ``n_frames`` (5 for 5, 10, 20, 50; 4 for
    8; 2 for 14): SegAttn's segments must tile the clip (docs/method.md); ``full`` ignores them.
    What ``mlb answer --frames N`` and the held-out checks use when no segment length is given."""
    return max((d for d in range(1, min(most, n_frames) + 1) if n_frames % d == 0), default=1)
