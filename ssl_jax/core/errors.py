"""The one base class of every error a user can cause (a bad file, key, value or option).

The CLI prints a `UserError` as one line (file, key or value named in the message) and lets
every other exception keep its traceback: an internal bug must never look like a user
mistake. It derives from ValueError so code written against the older ValueError-based
errors keeps working."""

from __future__ import annotations


class UserError(ValueError):
    """A problem with the user's input, files or environment, stated so they can fix it."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or that a named folder must hold) is not there; also
    a FileNotFoundError, as it was before there was a common base."""
