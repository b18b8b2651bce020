"""The explorer's widgets (ipywidgets): the notebook shows ``ExplorerApp().widget`` (docs/explore.md).

Every control maps to one argument of :class:`~mlb_core.explore.explorer.Explorer`; the "Ask"
button (or Enter in the question box) runs stage one and the chosen methods and fills the
outputs: the stage-one attention overlay, a table of answers, token counts and seconds per
stage, and the kept-token overlay. A bad setting shows its one-line error in red and leaves
the last results in place.
"""

from __future__ import annotations

import html
from typing import Any

from mlb_core.config import POOL_MODES, TAIL_MODES
from mlb_core.errors import MLBError
from mlb_core.explore.explorer import Explorer, figure_png, plot_attention, plot_kept, video_choices
from mlb_core.parsing import parse_grid

ANY_PATH = "a path (type it below)"
GRIDS = ("1x2", "2x2", "2x3", "3x3", "4x4", "6x6")
DEFAULT_QUESTION = "What colour is the object in the video?"


class ExplorerApp:
    """The explorer's controls and outputs around one :class:`Explorer`.

    Args:
        explorer: default a new ``Explorer()`` (the embedded model, ``cpu`` preset).
        root: where ``data/probe/videos`` is looked for (the repository root).
        methods: the methods offered; default every registered method.
    """

    def __init__(self, explorer: Explorer | None = None, root: str = ".", methods: list[str] | None = None) -> None:
        import ipywidgets as W

        from mlb_core.methods.registry import METHODS

        self.explorer = explorer or Explorer()
        base = self.explorer.params()
        self.choices = video_choices(root)
        style = {"description_width": "110px"}
        wide = W.Layout(width="520px")
        self.video = W.Dropdown(options=[*self.choices, ANY_PATH], description="video", style=style, layout=wide)
        self.path = W.Text(placeholder="/path/to/video.mp4", description="path", style=style, layout=wide)
        self.question = W.Text(value=DEFAULT_QUESTION, description="question", style=style, layout=wide,
                               continuous_update=False)
        self.model = W.Text(value=self.explorer.model, description="model", style=style, layout=wide)
        self.n_frames = W.Dropdown(options=sorted({5, 10, 20, 50, base.n_frames}), value=base.n_frames,
                                   description="frames", style=style)
        self.layer = W.BoundedIntText(value=base.score_layer, min=0, max=200, description="scoring layer",
                                      style=style)
        self.segment = W.Dropdown(options=sorted({1, 2, 5, 10, base.segment_frames}), value=base.segment_frames,
                                  description="segment frames", style=style)
        grid = f"{base.grid[0]}x{base.grid[1]}"
        self.grid = W.Dropdown(options=GRIDS if grid in GRIDS else (grid, *GRIDS), value=grid,
                               description="GAPool grid", style=style)
        self.pool_mode = W.Dropdown(options=POOL_MODES, value=base.pool_mode, description="pool mode", style=style)
        self.tail_mode = W.Dropdown(options=TAIL_MODES, value=base.tail_mode, description="tail mode", style=style)
        offered = methods or sorted(METHODS)
        self.methods = W.SelectMultiple(options=offered, value=[m for m in ("mlb", "segattn-topk") if m in offered],
                                        description="methods", style=style, rows=min(10, len(offered)))
        self.ask_button = W.Button(description="Ask", button_style="primary", icon="play")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="idle", style=style)
        self.status = W.HTML()
        self.attention_image = W.Image(format="png")
        self.answers = W.HTML()
        self.kept_image = W.Image(format="png")
        for name in ("video", "path", "question", "methods", "ask_button", "attention_image", "answers", "kept_image",
                     "status"):
            getattr(self, name).add_class(f"mlb-{name.replace('_', '-')}")  # for the browser test
        self.ask_button.on_click(lambda _: self.run())
        self.question.observe(lambda change: self.run(), names="value")
        self.video.observe(lambda change: setattr(self.path, "disabled", change["new"] != ANY_PATH), names="value")
        self.path.disabled = self.video.value != ANY_PATH
        left = W.VBox([self.video, self.path, self.question, self.model, self.methods])
        right = W.VBox([self.n_frames, self.segment, self.layer, self.grid, self.pool_mode, self.tail_mode])
        self.widget = W.VBox([
            W.HBox([left, right]), W.HBox([self.ask_button, self.progress]), self.status,
            W.HTML("<b>Stage one: where the last query token looks, segment by segment</b>"),
            self.attention_image, W.HTML("<b>Answers</b>"), self.answers,
            W.HTML("<b>What each method keeps</b>"), self.kept_image,
        ])

    # ---- reading the controls ------------------------------------------------------------
    def chosen_video(self) -> str:
        if self.video.value == ANY_PATH:
            if not self.path.value.strip():
                raise MLBError("type a video path, or choose a clip")
            return self.path.value.strip()
        return self.choices[self.video.value]

    def chosen_params(self) -> Any:
        return self.explorer.params(n_frames=int(self.n_frames.value), segment_frames=int(self.segment.value),
                                    score_layer=int(self.layer.value), grid=parse_grid(self.grid.value),
                                    pool_mode=self.pool_mode.value, tail_mode=self.tail_mode.value)

    def _progress(self, what: str, fraction: float) -> None:
        self.progress.value = fraction
        self.progress.description = "done" if fraction >= 1 else "working"
        self.status.value = f"<i>{html.escape(what)}</i>"

    # ---- one question --------------------------------------------------------------------
    def run(self) -> bool:
        """Answer the question with the current settings; True when it worked."""
        self.ask_button.disabled = True
        try:
            self.explorer.set_model(self.model.value.strip() or "embedded")
            video, params = self.chosen_video(), self.chosen_params()
            n_layers = len(self.explorer.vlm.layers)
            if params.score_layer >= n_layers:
                raise MLBError(f"scoring layer {params.score_layer} is past the model's last layer ({n_layers - 1})")
            question = self.question.value
            att = self.explorer.attention(video, question, params, self._progress)
            frames = self.explorer.features(video, params.n_frames).frames
            self.attention_image.value = figure_png(plot_attention(frames, att))
            views = self.explorer.ask(video, question, list(self.methods.value), params, self._progress)
            if any(v.error is None for v in views):
                self.kept_image.value = figure_png(plot_kept(frames, views))
            self.answers.value = answers_html(views)  # last: a new answers table means every output is new
            self.status.value = f"stage one: {att.seconds:.2f} s (0 when cached)"
            return True
        except MLBError as exc:
            self.progress.description = "error"
            self.status.value = f'<span style="color:#b00020">error: {html.escape(str(exc))}</span>'
            return False
        finally:
            self.ask_button.disabled = False


def answers_html(views: list[Any]) -> str:
    """The answers as an HTML table (class ``mlb-answers``), one row per method."""
    import pandas as pd

    table = pd.DataFrame([v.row() for v in views])
    return table.to_html(index=False, classes="mlb-answers", float_format=lambda x: f"{x:.3f}", escape=True)
