"""The one mark of an error that is the user's input, not the code: reported as its message alone.

Every place that reports failures treats :class:`BadInput` the same way: the CLI prints its one line and
exits 2; Prefect's run logs (terminal and UI) show its message without a traceback, because the traceback
would point at our code when what needs fixing is a file, a path or a setting. Raising it is a promise that
the message names the input and says what is wrong. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class BadInput(ValueError):
    """A missing, unreadable or malformed input, or a setting that cannot work; the message says which."""


class FailedElsewhere(RuntimeError):
    """A run this one waited on (a deployment run on another worker) failed, and its own log holds the
    cause: reported here as one line naming that run, without a traceback that would only point at the
    waiting. Not bad input, so the CLI exits 1."""
