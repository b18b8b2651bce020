"""Selection: last-query attention, GAPool and VSTail, SegAttn's two stages, and the one
stage-one score cache (docs/method.md, "SegAttn")."""

from mlb_core.selection.attention import last_query_attention
from mlb_core.selection.gapool import gapool, vstail
from mlb_core.selection.scores import StageOneCache
from mlb_core.selection.segattn import segattn, stage_one

__all__ = ["StageOneCache", "gapool", "last_query_attention", "segattn", "stage_one", "vstail"]
