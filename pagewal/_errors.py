"""The error hierarchy: one base class, one subclass per decision the caller must make.

Every error pagewal raises on purpose derives from :class:`PagewalError`. Input errors also
derive from :class:`ValueError` (as attrs' validation errors do) so generic code that guards
against bad values keeps working.
"""

from __future__ import annotations

import errno
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
    """A pager was handed a page it cannot store: a page number outside 0..2**32-1 (or, to
    write, at or past the store's ``max_pages``: the data file could not hold it), an image
    that is not exactly ``page_size`` bytes, or a ``page_size`` the pager does not support (or
    that differs from the one the log was written with). Nothing was staged."""


class InvalidPositionError(PagewalError, ValueError):
    """A position handed to :meth:`Wal.retire` lies beyond every ``commit_seq`` this log has
    assigned: a ticket of another log, or a made-up position. Nothing was retired; pass a
    ticket (or position) this log returned."""


class WrongLogError(InvalidPositionError):
    """A ticket of another log (its log id is not this log's, DESIGN §1) was passed to
    :meth:`Wal.wait_durable`, :meth:`Wal.is_durable` or :meth:`Wal.retire`: its numbers mean
    nothing here. Wait on the log (or pager) that returned it."""


class ClosedError(PagewalError):
    """The log (or pager) was closed; open it again to continue."""


class LogLockedError(PagewalError):
    """Another open :class:`Wal` (in this or another process) holds the log's lock file.

    Two writers on one log would overwrite each other's segments; close the other one first.
    """


class ForeignFileError(PagewalError, OSError):
    """A file at one of the log's names is not provably the log's own, so pagewal neither
    follows, writes through, reads past nor deletes it.

    Raised for a symbolic link, directory, fifo, socket or device where pagewal creates, opens
    or reads a file (a segment, a segment's or the checkpoint's temporary file, the checkpoint,
    the lock file, a pager's data file); for any file already at the name of a temporary file
    pagewal creates; and for a file named like a segment the checkpoint covers (recovery would
    delete it) whose header is not that segment's. ``files`` lists each ``(path, what is
    there)``; ``path`` is the first. Nothing was deleted: check what it is, move it out of the
    log's directory (or remove it yourself), and retry. Also an ``OSError`` (``errno`` EEXIST,
    ELOOP, EISDIR...), so a log that meets one while running breaks with it chained
    (:class:`BrokenLogError`).
    """

    def __init__(self, files: tuple[tuple[str, str], ...], code: int = errno.EEXIST) -> None:
        if not files:
            raise ValueError("ForeignFileError needs at least one file")
        self.files = files
        self.path = files[0][0]
        them = "it" if len(files) == 1 else "them"
        listed = "; ".join(f"{path}: {what}" for path, what in files)
        self.message = (
            f"{listed}: not the log's own, so pagewal neither follows, writes nor deletes "
            f"{them} (nothing was deleted): move {them} out of the log's directory (or remove "
            f"{them} yourself) and retry")
        super().__init__(code, self.message, self.path)

    def __str__(self) -> str:
        return self.message

    def __reduce__(
        self,
    ) -> tuple[type[ForeignFileError], tuple[tuple[tuple[str, str], ...], int]]:
        return type(self), (self.files, self.errno or errno.EEXIST)


class BrokenLogError(PagewalError):
    """Writing or fsyncing a segment failed; the log refuses all further work.

    The failing epoch and every later one are never reported durable, because after a failed
    fsync the kernel may have dropped the dirty pages (PostgreSQL's 2018 "fsyncgate"): a retry
    could report lost data as durable. The original ``OSError`` is chained as ``__cause__``.
    Reopen the log (which runs recovery) to continue from the durable prefix.
    """


class CheckpointFailedError(PagewalError):
    """Opening a page store failed while applying its log to the data file (the file system
    refused: ``EFBIG``, ``ENOSPC``, ``EIO``, ``EROFS``...; the ``OSError`` is chained).

    Every acknowledged page is still in the log, which the failure left intact. Read them
    with ``WalPager.open(path, page_size, read_only=True)``; free space or fix what the file
    system refused, then open the store normally again.
    """


class ReadOnlyError(PagewalError):
    """The page store was opened with ``read_only=True``: it serves reads only. Open it again
    without ``read_only`` to write, checkpoint or wait for durability."""


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
