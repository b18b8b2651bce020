"""Logging for the ``mlb`` command and for library users (docs/api.md, "Logging and warnings").

Every module logs to ``logging.getLogger(__name__)``, so all of the package's messages sit
under the ``mlb_core`` logger. The library adds no handler of its own: in a notebook that
has not configured logging, a warning still reaches stderr through Python's last-resort
handler, one line. The ``mlb`` command calls :func:`setup_logging`:

==========  ========================  ====================================  ============================
flag        ``mlb_core`` level        transformers / huggingface_hub        progress bars
==========  ========================  ====================================  ============================
``-q``      WARNING                   as set (WARNING unless configured)    none
(none)      INFO                      as set                                downloads; weight loading on
                                                                            a terminal only
``-v``      DEBUG                     as set                                as with no flag
``-vv``     DEBUG                     INFO                                  all
==========  ========================  ====================================  ============================

No warning filter is installed here: the run was observed to raise no third-party Python
warning (docs/api.md), and silencing them all would hide the ones that matter.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

LOGGER_NAME = "mlb_core"


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to the *current* ``sys.stderr`` (which pytest and
    notebooks replace), like :data:`logging.lastResort`."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        logging.Handler.__init__(self, level)

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler.setStream assigns it; always sys.stderr
        pass


class _LineFormatter(logging.Formatter):
    """One line per record, in the command's voice: ``warning: ...``, ``error: ...``, plain text
    for INFO, ``debug: <logger>: ...`` for DEBUG."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            text = f"error: {text}"
        elif record.levelno >= logging.WARNING:
            text = f"warning: {text}"
        elif record.levelno < logging.INFO:
            text = f"debug: {record.name}: {text}"
        if record.exc_info and record.levelno < logging.WARNING:  # tracebacks only when debugging
            text += "\n" + self.formatException(record.exc_info)
        return text


def level_for(verbosity: int = 0, quiet: bool = False) -> int:
    """The ``mlb_core`` level: WARNING when ``quiet``, else INFO, DEBUG from ``verbosity >= 1``."""
    if quiet:
        return logging.WARNING
    return logging.DEBUG if verbosity >= 1 else logging.INFO


def setup_logging(verbosity: int = 0, quiet: bool = False) -> logging.Logger:
    """Send the ``mlb_core`` logger's records to stderr, one line each, at the level of the
    flags (table in the module docstring), and set the Hugging Face progress bars to match.

    Calling it again replaces the handler it installed before (never another one). Returns
    the ``mlb_core`` logger.
    """
    logger = logging.getLogger(LOGGER_NAME)
    for old in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(old)
    handler = _StderrHandler()
    handler.setFormatter(_LineFormatter())
    logger.addHandler(handler)
    logger.setLevel(level_for(verbosity, quiet))
    _third_party(verbosity, quiet)
    return logger


def _third_party(verbosity: int, quiet: bool) -> None:
    """Progress bars and verbosity of transformers / huggingface_hub (both have their own
    handlers). Their log level is left as the user set it (``TRANSFORMERS_VERBOSITY``),
    except ``-vv``, which asks for INFO; ``HF_HUB_DISABLE_PROGRESS_BARS=1`` always wins."""
    import huggingface_hub.constants as hub_constants
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    if quiet:
        hf_logging.disable_progress_bar()  # transformers' bars and the hub's downloads
        return
    if verbosity >= 2:
        hf_logging.set_verbosity_info()
        hub_utils.logging.set_verbosity_info()
    if hub_constants.HF_HUB_DISABLE_PROGRESS_BARS is True:  # the user's setting (enabling would warn)
        return
    isatty = getattr(sys.stderr, "isatty", None)
    if verbosity >= 2 or (isatty is not None and isatty()):
        hf_logging.enable_progress_bar()
        return
    # not a terminal (pipes, logs, tests): no "Loading weights" bar, which is noise for the
    # local files it reads; download bars stay, a multi-GB download must not look hung
    hf_logging.disable_progress_bar()
    hub_utils.enable_progress_bars()
