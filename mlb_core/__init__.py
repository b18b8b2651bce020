"""mlb_core: the LLaVA-MLB pipeline (arXiv 2503.11205) on stock Hugging Face LLaVA models.

SegAttn (two-stage, attention-guided token selection), GAPool (gridded attention pooling)
and VSTail (a visual summary at the sequence's tail) for a frozen Image LLM.
"""

from mlb_core.config import PRESETS, MLBParams, get_preset
from mlb_core.errors import MLBError
from mlb_core.selection.attention import last_query_attention
from mlb_core.selection.gapool import gapool, vstail
from mlb_core.selection.segattn import segattn, stage_one

__all__ = ["MLBParams", "PRESETS", "get_preset", "MLBError", "gapool", "vstail", "segattn",
           "stage_one", "last_query_attention"]
__version__ = "0.1.0"
