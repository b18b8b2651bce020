"""The settings of one benchmark run (validated ``mlb bench`` options) and its fixed inputs."""

from __future__ import annotations

from dataclasses import dataclass

from mlb_core.bench.measure import Estimator

QUESTIONS = (
    "What is happening in the video?",
    "How many people appear in the video?",
    "What color is the largest object?",
    "Where does the video take place?",
    "What does the person do after stopping?",
    "Is anyone riding a bicycle?",
    "What is the weather like?",
    "Describe the main event in one sentence.",
)
DEFAULT_METHODS = ("mlb", "segattn-topk", "full", "sf-llava", "fastv")
PARTS = ("flops", "7b", "embedded")


@dataclass(frozen=True)
class Settings:
    """Validated options of ``mlb bench`` (see :func:`mlb_core.bench.command.settings_from_args`).

    Attributes:
        parts: any of ``flops``, ``7b``, ``embedded``.
        preset: the method preset (``mlb_core.config.get_preset``).
        video: the clip of the embedded part.
        questions: questions per video (amortisation of stage one).
        methods: the ``--methods`` option as given (a comma list or ``all``).
        repeats: embedded repeats.
        single_run_s: embedded: a method whose first run takes longer is measured once.
        repeats_7b: 7B-shape timed runs after the first.
        layers: depth of the 7B-shaped model.
        shape: layer shape of the ``7b`` part (a key of :data:`mlb_core.bench.flops.SHAPES`).
        fit_lengths: one-layer lengths of the 7B time fit.
        estimator: summary of repeated timings (:func:`mlb_core.bench.measure.estimate`).
        device: where the embedded part runs: ``auto`` (CUDA when present), ``cpu`` or ``cuda``
            (:func:`mlb_core.bench.measure.bench_device`).
        warmup: untimed warm-up rounds of the embedded part on a CUDA device (none on the CPU).
        out: the output folder.
    """

    parts: frozenset[str] = frozenset(PARTS)
    preset: str = "mlb"
    video: str = "bikes.mp4"
    questions: int = 5
    methods: str = ",".join(DEFAULT_METHODS)
    repeats: int = 3
    single_run_s: float = float("inf")
    repeats_7b: int = 1
    layers: int = 3
    shape: str = "vicuna-7b"
    fit_lengths: tuple[int, ...] = (2048, 3072, 4096)
    estimator: Estimator = "min"
    device: str = "auto"
    warmup: int = 2
    out: str = "results/bench"
