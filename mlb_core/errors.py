"""One exception type for every user-facing problem: the CLI prints it as one line."""

from __future__ import annotations


class MLBError(Exception):
    """A problem with the user's input (video, parameters, model id, prompt length).

    The CLI catches it and prints ``error: <message>`` with exit status 2, never a traceback.
    """
