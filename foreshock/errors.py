"""Errors the `foreshock` command reports in one line, without a traceback.

A `UserError` says that what was asked cannot be done as configured: a
topic that does not exist, a broker that would not take the records. The
command line prints its message and exits 2; `foreshock -v` shows the
traceback as well. Modules raise their own subclasses, which keep the
built-in base that describes them (LookupError, RuntimeError).
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A failure the person running the command can act on from its message."""
