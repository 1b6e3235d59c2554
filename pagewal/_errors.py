"""The error hierarchy: one base class, one subclass per decision the caller must make.

Every error pagewal raises on purpose derives from :class:`PagewalError`. Input errors also
derive from :class:`ValueError` (as attrs' validation errors do) so generic code that guards
against bad values keeps working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._codec import ChainPosition


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


class CheckpointMissingError(CorruptSegmentError):
    """The checkpoint record is missing, or damaged in every copy, so the log cannot tell
    where its chain starts: the segments say they continue from a later position than an empty
    log's, or there is no readable record to say where they start.

    ``skip_corrupt`` does not help (it would restart the commit numbering and set aside
    segments that chain correctly). ``continues_from`` is the position the first surviving
    segment vouches for (``None`` when no segment can vouch). Rebuild the record with
    ``pagewal recover DB --rebuild-checkpoint`` (or :func:`pagewal.rebuild_checkpoint`),
    or restore the file from a backup.
    """

    def __init__(self, path: str, offset: int, reason: str,
                 continues_from: ChainPosition | None = None) -> None:
        super().__init__(path, offset, reason)
        self.continues_from = continues_from
        self.args = (f"{path}: {reason}",)
