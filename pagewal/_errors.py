"""The error hierarchy: one base class, one subclass per decision the caller must make.

Every error pagewal raises on purpose derives from :class:`PagewalError`. Input errors also
derive from :class:`ValueError` (as attrs' validation errors do) so generic code that guards
against bad values keeps working.
"""

from __future__ import annotations

import errno


class PagewalError(Exception):
    """Base class of every error pagewal raises on purpose."""


class ConfigError(PagewalError, ValueError):
    """A configuration value (argument or ``PAGEWAL_*`` variable) is not acceptable.

    Fix the named variable or argument; nothing was opened or written.
    """

    def __init__(self, variable: str, value: object, accepted: str) -> None:
        self.variable = variable
        self.value = value
        self.accepted = accepted
        super().__init__(f"{variable}={value!r} is not valid: expected {accepted}")


class InvalidCommitError(PagewalError, ValueError):
    """A commit was rejected before anything was staged (no sequence number was used).

    Raised for an empty commit, a page number outside 0..2**32-1, an image that is not
    bytes-like, or a bad ``db_size_pages``/``txn_id``.
    """


class ImageTooLargeError(InvalidCommitError):
    """A page after-image is longer than 65,536 bytes (or empty); nothing was staged."""


class InvalidPageError(PagewalError, ValueError):
    """A pager was handed a page it cannot store: a page number outside 0..2**32-1, an image
    that is not exactly ``page_size`` bytes, or a ``page_size`` the pager does not support (or
    that differs from the one the log was written with). Nothing was staged."""


class ClosedError(PagewalError):
    """The log (or pager) was closed; open it again to continue."""


class LogLockedError(PagewalError):
    """Another open :class:`Wal` (in this or another process) holds the log's lock file.

    Two writers on one log would overwrite each other's segments; close the other one first.
    """


class ForeignFileError(PagewalError, OSError):
    """Something that is not the log's own is at a name pagewal must create or open.

    A symbolic link, a directory or other non-regular file, or a file already at the name of a
    temporary file pagewal creates (a segment's or the checkpoint's ``.tmp``), its lock file or
    a pager's data file. pagewal never follows, truncates or writes through it: ``path`` names
    it and ``reason`` says what is there. Check what it is and who put it there, remove it, and
    open the log again. Also an ``OSError`` (``errno`` EEXIST, ELOOP or EISDIR...); while a log
    runs it breaks the log, so waiters get :class:`BrokenLogError` with this error chained.
    """

    def __init__(self, path: str, reason: str, code: int = errno.EEXIST) -> None:
        self.path = path
        self.reason = reason
        self.message = (f"{path}: {reason}: it is not the log's own file, so pagewal neither "
                        "follows nor replaces it; remove it (after checking what it is) and "
                        "open the log again")
        super().__init__(code, self.message, path)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[ForeignFileError], tuple[str, str, int]]:
        return type(self), (self.path, self.reason, self.errno or errno.EEXIST)


class BrokenLogError(PagewalError):
    """Writing or fsyncing a segment failed; the log refuses all further work.

    The failing epoch and every later one are never reported durable, because after a failed
    fsync the kernel may have dropped the dirty pages (PostgreSQL's 2018 "fsyncgate"): a retry
    could report lost data as durable. The original ``OSError`` is chained as ``__cause__``.
    Reopen the log (which runs recovery) to continue from the durable prefix.
    """


class CorruptSegmentError(PagewalError):
    """A segment (or checkpoint) file failed validation: nothing from it was returned.

    ``path`` names the file, ``offset`` the byte where the problem was found, ``reason``
    what was wrong. Recover with ``skip_corrupt=True`` to keep the valid prefix of the chain.
    """

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(f"{path}: corrupt at offset {offset}: {reason}")
