"""WalPager: a page store over a data file, with pagewal as its write-ahead log.

Pages live in the data file at ``page_no * page_size``; the log's files live beside it. A
transaction's writes become one commit of the log. Once the commit is acknowledged (or, with
``durable=False``, once it is staged) its pages are installed in the **read overlay**, an
in-memory map of page → newest committed image, and served from there until a checkpoint has
written them into the data file. Reads therefore never see stale bytes from the data file.

Visibility is read-committed: :meth:`WalPager.read` returns the newest installed image of the
page; a commit's pages are installed together under one lock, so a reader never sees part of
a commit in the overlay. A transaction also sees its own writes.

Checkpoints (see ``_checkpoint``) run on a background thread when the log has grown by
``config.checkpoint_bytes`` since the last one, or when :meth:`WalPager.checkpoint` is called.
While a checkpoint writes a batch of pages into the data file, those pages are pinned in the
overlay first, so no reader reads a page the checkpoint is rewriting; a reader that looked in
the overlay before the pin retries (``_generation`` changed).

Locks: ``_checkpoint_lock`` (one checkpoint at a time) → ``_state`` (overlay, counters, the
condition writers wait on). The log's own locks are never held while taking ``_state``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType

import attrs

from ._chain import RecoveryResult
from ._checkpoint import CheckpointResult, run_checkpoint
from ._codec import MAX_IMAGE_SIZE, MAX_PAGE_NO, RECORD_OVERHEAD, ChainPosition
from ._config import FsyncMode, WalConfig
from ._errors import (
    BrokenLogError,
    CheckpointFailedError,
    CheckpointMissingError,
    ClosedError,
    ConfigError,
    CorruptSegmentError,
    InvalidPageError,
    LogLockedError,
    PagewalError,
    ReadOnlyError,
)
from ._fs import FileSystem, OsFileSystem, require_regular
from ._layout import CheckpointRecord, LogFiles, checkpoint_name
from ._recovery import READ_ONLY_ERRNOS, read_log, write_checkpoint
from ._stats import Ticket, WalStats
from ._wal import Wal

MIN_PAGE_SIZE = 512
_MAX_FILE_BYTES = (1 << 63) - 1  # the largest file offset

_Image = bytes | memoryview


@attrs.frozen(kw_only=True)
class PagerStats:
    """A snapshot of a pager's counters (``WalPager.statistics()``); times are in seconds.

    ``overlay_bytes`` counts page images held in memory (``overlay_pages * page_size``);
    writers wait while it exceeds ``overlay_limit_bytes``. ``wal`` is the log's statistics
    (None for a store opened read-only, which holds the recovered log in the overlay).
    """

    page_size: int
    page_count: int
    overlay_pages: int
    overlay_bytes: int
    overlay_limit_bytes: int
    log_bytes_since_checkpoint: int
    checkpoint_position: ChainPosition
    checkpoints: int
    checkpoint_seconds_total: float
    pages_checkpointed: int
    transactions_committed: int
    overlay_waits: int
    wal: WalStats | None


@attrs.frozen
class _PageLimit:
    """How many pages a store may hold (page numbers ``0..pages - 1``), and what sets that:
    ``reason`` says which limit binds and how to raise it."""

    pages: int
    reason: str


def _file_page_limit(
    page_size: int, data_path: str, *, file_system_bytes: int, process_bytes: int | None
) -> _PageLimit:
    """The most pages the data file can hold: the smallest of the log format's 32-bit page
    numbers, the largest file the file system allows and this process's ``RLIMIT_FSIZE``.

    A page past it could be committed but never written into the data file: every checkpoint,
    and so every open, would fail with ``EFBIG``."""
    limits = [_PageLimit(MAX_PAGE_NO + 1, "page numbers are 32-bit in the log format")]
    limits.append(_PageLimit(
        file_system_bytes // page_size,
        f"the file system holding {data_path} allows files of at most {file_system_bytes:,} "
        "bytes; use larger pages, or a file system with a larger limit"))
    if process_bytes is not None:
        limits.append(_PageLimit(
            process_bytes // page_size,
            f"this process's file-size limit (RLIMIT_FSIZE, ulimit -f) is {process_bytes:,} "
            "bytes; raise it"))
    return min(limits, key=lambda limit: limit.pages)


def _capped(ceiling: _PageLimit, max_pages: int | None, page_size: int) -> _PageLimit:
    """``ceiling`` lowered to ``max_pages``; :class:`ConfigError` for a ``max_pages`` above it
    (it could not be honoured)."""
    if max_pages is None:
        return ceiling
    if _check_max_pages(max_pages) > ceiling.pages:
        raise ConfigError("max_pages", max_pages,
                          f"None or an integer from 1 to {ceiling.pages:,}, the most pages of "
                          f"{page_size} bytes this store can hold ({ceiling.reason})")
    return _PageLimit(max_pages, f"WalPager.open was given max_pages={max_pages:,}; open it "
                                 f"with a larger one (at most {ceiling.pages:,} here)")


def _check_max_pages(max_pages: object) -> int:
    if not isinstance(max_pages, int) or isinstance(max_pages, bool) or max_pages < 1:
        raise ConfigError("max_pages", max_pages, "None or a positive integer")
    return max_pages


def _process_file_size_limit() -> int | None:
    """This process's ``RLIMIT_FSIZE`` soft limit in bytes (None: unlimited). A write past it
    fails with ``EFBIG`` (Python ignores ``SIGXFSZ``, which would otherwise kill the process)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def _check_page_size(page_size: object) -> int:
    if (not isinstance(page_size, int) or isinstance(page_size, bool)
            or not MIN_PAGE_SIZE <= page_size <= MAX_IMAGE_SIZE
            or page_size & (page_size - 1)):
        raise InvalidPageError(f"page_size={page_size!r} is not valid: expected a power of two "
                               f"from {MIN_PAGE_SIZE} to {MAX_IMAGE_SIZE}")
    return page_size


def _record_page_size(
    files: LogFiles, fs: FileSystem, recovery: RecoveryResult, page_size: int, names: list[str],
    *, sync: bool,
) -> None:
    """Record ``page_size`` with the store (the checkpoint record, at the recovered checkpoint
    position), so that reopening it with another size is refused.

    Written before the data file is created: a crash in between leaves a record and no data
    file, which opens as an empty store. A data file that has bytes while no checkpoint record
    exists can only have lost its record (a checkpoint writes the data file, then the record),
    and is refused rather than given a page size and a commit numbering it may not have.
    """
    data_path = files.path(files.db_name)
    if checkpoint_name(files.db_name) not in names and files.db_name in names:
        status = fs.lstat(data_path)  # never through a link: open refuses one, naming it
        require_regular(data_path, status.st_mode)
        size = status.st_size
        if size:
            raise CheckpointMissingError(
                files.checkpoint_path, 0,
                f"the checkpoint record is missing, but the data file {data_path} holds "
                f"{size:,} bytes of checkpointed pages: its page size and the commit numbering "
                f"it continues are unknown. Nothing was changed; rebuild the record with "
                f"'{files.rebuild_command} --page-size N' (and, when no segment says where the "
                "log continues, '--epoch E --commit-seq S'; 0 and 0 if unknown)")
    write_checkpoint(files, fs, CheckpointRecord(position=recovery.base, page_size=page_size),
                     sync=sync)


def _check_recovered_page_size(files: LogFiles, recovery: RecoveryResult, page_size: int) -> None:
    """Refuse ``page_size`` unless it is the size the store recorded (if it did) and the size
    of every image the recovered log holds (:class:`InvalidPageError` naming both)."""
    data_path = files.path(files.db_name)
    if recovery.page_size and recovery.page_size != page_size:
        raise InvalidPageError(
            f"{data_path}: the store's pages are {recovery.page_size} bytes (recorded in "
            f"{files.checkpoint_path}), not page_size={page_size}; open it with "
            f"page_size={recovery.page_size}")
    lengths = sorted(set(recovery.records["image_length"].tolist()) - {page_size})
    if lengths:
        raise InvalidPageError(
            f"{data_path}: the log holds images of {', '.join(map(str, lengths))} "
            f"bytes but page_size={page_size}; open it with the page size it was "
            "written with")


class WalPager:
    """A page store: ``page_size``-byte pages in a data file, made durable by a :class:`Wal`.

    Open with :meth:`open`, which recovers. Thread-safe: any number of threads may read and run
    transactions at once (one :class:`Transaction` per thread). Durability is the log's: with
    ``fsync=full`` a transaction committed with ``durable=True`` survives power loss when
    :meth:`Transaction.commit` returns.

    Memory: the read overlay holds one image per page committed since the last checkpoint
    (about ``page_size + 100`` bytes each). Writers wait before committing while it holds more
    than ``2 * config.checkpoint_bytes`` (a checkpoint is then running), so it stays under
    that bound plus one transaction per committing thread; a checkpoint adds at most one batch
    of 64 MiB of segment data while it runs.
    """

    _wal_class: type[Wal] = Wal
    """The log the store opens; a seam for the crash harness."""

    def __init__(
        self, files: LogFiles, fs: FileSystem, wal: Wal | None, data_fd: int | None,
        page_size: int, page_count: int, *, limit: _PageLimit, base: ChainPosition,
        lock: int | None = None,
    ) -> None:
        self._files = files
        self._fs = fs
        self._wal = wal  # None: opened read_only
        if wal is not None:
            # The pager's checkpoints record the log's checkpoint and delete its segments; a
            # Wal.retire() of its own would skip pages the data file does not have yet.
            wal._refuse_retire(f"{files.path(files.db_name)}: this log belongs to a WalPager, "
                               "whose checkpoints retire its segments; call pager.checkpoint()")
        self._data_fd = data_fd  # None: read_only, and there is no data file (reads zeros)
        self._lock = lock  # read_only: the log's lock, held so no writer changes the store
        self._page_size = page_size
        self._limit = limit
        config = wal.config if wal is not None else WalConfig()
        self._sync = config.fsync is not FsyncMode.OFF
        self._checkpoint_bytes = config.checkpoint_bytes
        self._overlay_limit = 2 * config.checkpoint_bytes

        self._checkpoint_lock = threading.Lock()
        # Guarded by _state.
        self._state = threading.Condition(threading.Lock())
        self._overlay: dict[int, tuple[int, _Image]] = {}  # page_no -> (commit_seq, image)
        self._checkpointed = base
        self._applied_seq = self._checkpointed.commit_seq  # seqs <= it are in the data file
        self._generation = 0  # bumped when a checkpoint pins pages it is about to rewrite
        self._page_count = page_count
        self._log_bytes = 0  # bytes committed since the last checkpoint
        self._readers = 0
        self._closed = False
        self._broken: tuple[str, BaseException] | None = None
        self._stop = False
        self._counters = {"checkpoints": 0, "pages_checkpointed": 0, "transactions": 0,
                          "overlay_waits": 0}
        self._checkpoint_seconds = 0.0
        self._checkpointer: threading.Thread | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        page_size: int = 4096,
        config: WalConfig | None = None,
        *,
        fs: FileSystem | None = None,
        skip_corrupt: bool = False,
        max_pages: int | None = None,
        read_only: bool = False,
    ) -> WalPager:
        """Open (creating if needed) the page store whose data file is ``path``.

        Recovery runs first: the checkpoint file and the segments after it are validated, and
        the committed pages they hold are applied to the data file (a checkpoint), so the
        store holds exactly the committed pages; new commits continue the commit sequence.
        ``config`` defaults to ``WalConfig.from_env()``. The page size is recorded with the
        store (in its checkpoint record) when it is created, or first opened by this version.
        Raises :class:`InvalidPageError` for a ``page_size`` that is unsupported or differs
        from the recorded one or the log's, :class:`CheckpointMissingError` when the store has
        lost its checkpoint record (rebuild it, see the message), :class:`LogLockedError`
        if the store is open elsewhere, :class:`CorruptSegmentError` for a corrupt log (with
        ``skip_corrupt=True`` the store continues after the log's valid prefix and the segments
        left out are renamed to ``*.corrupt``, as :meth:`Wal.open` does), and
        :class:`ForeignFileError` for a file at one of the log's names that is not the log's
        own, or a symbolic link or non-regular file at the data file's real name. Symbolic
        links in ``path`` are resolved once, as :meth:`Wal.open` does; a new data file gets
        :data:`DEFAULT_FILE_MODE` less the umask, and log files created later the data file's
        permissions.

        ``max_pages`` caps the store at pages ``0..max_pages - 1``; by default (and at most) it
        is the most pages of ``page_size`` bytes the data file can hold: the file system's
        largest file (found with ``lseek`` on the data file, e.g. 16 TiB - 4 KiB on ext4 with
        4 KiB blocks), this process's ``RLIMIT_FSIZE``, and the log format's 2**32 page
        numbers. :meth:`Transaction.write` refuses a page past it (:class:`InvalidPageError`),
        so no commit is acknowledged that a checkpoint could not write; a larger ``max_pages``
        raises :class:`ConfigError`.

        If the file system refuses the checkpoint at open (``EFBIG``, ``ENOSPC``, ``EIO``,
        ``EROFS``...), :class:`CheckpointFailedError` is raised with the ``OSError`` chained:
        the log is left intact and ``read_only=True`` still reads every page.

        ``read_only=True`` writes nothing (but the log's empty lock file, if it is missing): it
        validates the log as recovery does (with ``skip_corrupt``, keeping the valid prefix;
        nothing is renamed or removed), and serves reads from the data file overlaid with the
        recovered log, which it keeps in memory (mapped). It holds the log's lock, so no writer
        changes the store meanwhile (on a read-only file system, where the lock cannot be taken
        and nobody can write, it reads without). Transactions, checkpoints and :attr:`wal`
        raise :class:`ReadOnlyError`.
        """
        page_size = _check_page_size(page_size)
        if max_pages is not None:
            _check_max_pages(max_pages)
        fs = fs or OsFileSystem()
        files = LogFiles.for_db(path, fs)
        if read_only:
            return cls._open_read_only(files, fs, page_size, skip_corrupt=skip_corrupt,
                                       max_pages=max_pages)
        config = WalConfig.from_env() if config is None else config
        wal = cls._wal_class.open(files.path(files.db_name), config, fs=fs,
                                  skip_corrupt=skip_corrupt)
        try:
            recovery = wal.recovery
            data_path = files.path(files.db_name)
            _check_recovered_page_size(files, recovery, page_size)
            names = fs.listdir(files.directory)
            if recovery.base.commit_seq and files.db_name not in names:
                raise CorruptSegmentError(
                    data_path, 0, f"the checkpoint says commits up to {recovery.base.commit_seq} "
                    "are in this data file, but it is missing; restore it (or move the log "
                    "files away to start empty)")
            if not recovery.page_size:
                _record_page_size(files, fs, recovery, page_size, names,
                                  sync=config.fsync is not FsyncMode.OFF)
            data_fd = fs.open_for_update(data_path)
        except BaseException:
            wal.close()
            raise
        try:
            ceiling = _file_page_limit(page_size, data_path,
                                       file_system_bytes=fs.max_file_size(data_fd),
                                       process_bytes=_process_file_size_limit())
            limit = _capped(ceiling, max_pages, page_size)
            page_count = -(-fs.file_size(data_fd) // page_size)
            if recovery.records.size:
                page_count = max(page_count, int(recovery.records["page_no"].max()) + 1)
            pager = cls(files, fs, wal, data_fd, page_size, page_count, limit=limit,
                        base=recovery.base)
        except BaseException:
            fs.close(data_fd)
            wal.close()
            raise
        try:
            if recovery.segments:
                highest = int(recovery.records["page_no"].max(initial=0))
                if highest >= ceiling.pages:
                    # Writing it would fail with EFBIG (or kill the process, where SIGXFSZ is
                    # not ignored): say so without trying.
                    raise OSError(errno.EFBIG, f"page {highest} is past the data file's limit "
                                  f"of {ceiling.pages:,} pages: {ceiling.reason}")
                pager._checkpoint(recovery)  # the recovered commits go into the data file
            wal.release_recovery()  # applied: neither their bytes nor mappings stay alive
        except BaseException as error:
            with contextlib.suppress(PagewalError):
                pager.close()
            cause = error.__cause__ if isinstance(error, BrokenLogError) else error
            if isinstance(cause, OSError):
                # Never a loop of "reopen to replay": name the way to the pages.
                raise CheckpointFailedError(
                    f"{data_path}: applying the log to the data file at open failed ({cause}); "
                    "every acknowledged page is still in the log, left intact: read them with "
                    "WalPager.open(path, page_size, read_only=True); free space or fix what the "
                    "file system refused, then open the store again") from cause
            raise
        pager._checkpointer = threading.Thread(target=pager._run_checkpointer,
                                               name="pagewal-checkpointer", daemon=True)
        pager._checkpointer.start()
        return pager

    @classmethod
    def _open_read_only(
        cls, files: LogFiles, fs: FileSystem, page_size: int, *, skip_corrupt: bool,
        max_pages: int | None,
    ) -> WalPager:
        """:meth:`open` with ``read_only=True``."""
        data_path = files.path(files.db_name)
        try:
            lock = fs.try_lock(files.lock_path, files.file_mode)
        except OSError as error:
            if error.errno not in READ_ONLY_ERRNOS:
                raise
            lock = None  # a read-only file system (or directory): nobody can change the store
        else:
            if lock is None:
                raise LogLockedError(
                    f"{data_path}: the store is open elsewhere (lock {files.lock_path} is "
                    "held); read it through that pager, or close it first")
        data_fd: int | None = None
        try:
            recovery = read_log(data_path, skip_corrupt=skip_corrupt, fs=fs)
            _check_recovered_page_size(files, recovery, page_size)
            try:
                data_fd = fs.open_for_sync(data_path)  # opens it read-only, creates nothing
            except FileNotFoundError:
                if recovery.base.commit_seq:
                    raise CorruptSegmentError(
                        data_path, 0, f"the checkpoint says commits up to "
                        f"{recovery.base.commit_seq} are in this data file, but it is missing; "
                        "restore it") from None
            file_bytes = _MAX_FILE_BYTES if data_fd is None else fs.max_file_size(data_fd)
            limit = _capped(_file_page_limit(page_size, data_path, file_system_bytes=file_bytes,
                                             process_bytes=_process_file_size_limit()),
                            max_pages, page_size)
            page_count = 0 if data_fd is None else -(-fs.file_size(data_fd) // page_size)
            page_nos, commit_seqs, images = recovery.latest_images()
            if page_nos:
                page_count = max(page_count, page_nos[-1] + 1)
            pager = cls(files, fs, None, data_fd, page_size, page_count, limit=limit,
                        base=recovery.base, lock=lock)
        except BaseException:
            if data_fd is not None:
                fs.close(data_fd)
            if lock is not None:
                fs.unlock(lock)
            raise
        # The recovered log overlays the data file, as the overlay of a running pager does.
        pager._overlay = dict(zip(page_nos, zip(commit_seqs, images, strict=True), strict=True))
        return pager

    # ------------------------------------------------------------------ properties

    @property
    def page_size(self) -> int:
        """Bytes per page (every image is exactly this long)."""
        return self._page_size

    @property
    def page_count(self) -> int:
        """Pages in the store: one past the highest page number committed or in the data file.
        Pages never written read as zeros."""
        return self._page_count

    @property
    def max_pages(self) -> int:
        """The most pages the store may hold: page numbers ``0..max_pages - 1`` can be written
        (see :meth:`open`)."""
        return self._limit.pages

    @property
    def read_only(self) -> bool:
        """Whether the store was opened with ``read_only=True`` (reads only)."""
        return self._wal is None

    @property
    def wal(self) -> Wal:
        """The log underneath (for its statistics and durability waits); a read-only store
        has none (:class:`ReadOnlyError`)."""
        return self._writable_log("has no log open for writing")

    def __enter__(self) -> WalPager:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.close()
        except PagewalError:
            if exc is None:
                raise

    # ------------------------------------------------------------------ reading

    def read(self, page_no: int) -> bytes:
        """The newest committed image of ``page_no`` (zeros if it was never written)."""
        offset = self._check_page_no(page_no) * self._page_size
        while True:
            with self._state:
                self._raise_if_unusable()
                entry = self._overlay.get(page_no)
                if entry is not None:
                    return bytes(entry[1])
                generation = self._generation
                self._readers += 1
            try:
                data = (b"" if self._data_fd is None
                        else self._fs.pread(self._data_fd, self._page_size, offset))
            finally:
                with self._state:
                    self._readers -= 1
                    if not self._readers:
                        self._state.notify_all()
            if self._generation == generation:  # no checkpoint pinned pages meanwhile
                return data.ljust(self._page_size, b"\0")

    # ------------------------------------------------------------------ writing

    def transaction(self, *, txn_id: int = 0) -> Transaction:
        """Begin a transaction: use it as a context manager, or call commit()/rollback().

        ``txn_id`` is stored with each record of its commit (for tools; 0 = none).
        """
        self._writable_log("takes no transactions")
        with self._state:
            self._raise_if_unusable()
        return Transaction(self, txn_id)

    def wait_durable(self, ticket: Ticket, timeout: float | None = None) -> None:
        """Wait until a transaction committed with ``durable=False`` is durable."""
        self._writable_log("has no commits to wait for").wait_durable(ticket, timeout=timeout)

    def _commit(self, writes: Mapping[int, bytes], txn_id: int, durable: bool) -> Ticket:
        wal = self._writable_log("takes no transactions")
        with self._state:
            # Bounded memory: wait while the overlay is over its limit (a checkpoint runs).
            if self._overlay_bytes() > self._overlay_limit:
                self._counters["overlay_waits"] += 1
                while self._overlay_bytes() > self._overlay_limit:
                    self._raise_if_unusable()
                    self._state.notify_all()  # wakes the checkpointer
                    self._state.wait()
            self._raise_if_unusable()
        pages = sorted(writes.items())
        ticket = wal.submit(pages, txn_id=txn_id)
        if durable:
            wal.wait_durable(ticket)
        self._install(ticket.commit_seq, pages)
        return ticket

    def _install(self, commit_seq: int, pages: Sequence[tuple[int, bytes]]) -> None:
        """Make a commit visible: all its pages at once, never over a newer image."""
        with self._state:
            # Pages of a commit the checkpoint already wrote are in the data file, or newer.
            if commit_seq > self._applied_seq:
                for page_no, image in pages:
                    entry = self._overlay.get(page_no)
                    if entry is None or entry[0] < commit_seq:
                        self._overlay[page_no] = (commit_seq, image)
            self._page_count = max(self._page_count, pages[-1][0] + 1)
            self._log_bytes += len(pages) * (self._page_size + RECORD_OVERHEAD)
            self._counters["transactions"] += 1
            if self._log_bytes >= self._checkpoint_bytes:
                self._state.notify_all()

    def _overlay_bytes(self) -> int:
        return len(self._overlay) * self._page_size

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self) -> CheckpointResult:
        """Write every committed page into the data file and retire the log segments holding
        them (see ``pagewal._checkpoint`` for the crash-safe order of steps).

        Commits staged before the call are made durable first. A failure breaks the pager
        (:class:`BrokenLogError`, cause chained): the data file may have lost writes, so it is
        not read again until the store is reopened, which replays the log.
        """
        return self._checkpoint()

    def _checkpoint(self, recovered: RecoveryResult | None = None) -> CheckpointResult:
        """:meth:`checkpoint`; ``recovered`` is what opening the log just read and validated,
        applied as it is instead of being read from the segments again."""
        wal = self._writable_log("cannot be checkpointed")
        with self._checkpoint_lock:
            with self._state:
                self._raise_if_unusable()
                counted = self._log_bytes
            wal.flush()
            target = wal.durable_position
            wal.sync()  # fsync=normal: the segments are fsynced before any is deleted
            try:
                result = self._run_checkpoint(self._fs, target, recovered)
            except (OSError, PagewalError) as error:
                self._break(f"checkpoint to epoch {target.epoch} failed ({error}); reopen the "
                            "store to replay the log", error)
                raise BrokenLogError(self._broken_message()) from error
            with self._state:
                self._checkpointed = target
                self._applied_seq = target.commit_seq
                self._log_bytes -= min(counted, self._log_bytes)
                self._counters["checkpoints"] += 1
                self._counters["pages_checkpointed"] += result.pages_written
                self._checkpoint_seconds += result.seconds
                self._state.notify_all()
            return result

    def _run_checkpoint(
        self, fs: FileSystem, target: ChainPosition, recovered: RecoveryResult | None
    ) -> CheckpointResult:
        assert self._data_fd is not None  # only a read-only store has none
        wal = self._writable_log("cannot be checkpointed")
        return run_checkpoint(
            self._files, fs, self._data_fd, page_size=self._page_size, base=self._checkpointed,
            target=target, sync=self._sync, before_write=self._pin, on_written=self._unpin,
            recovered=recovered, log_id=wal.log_id, retire_log_files=wal._retire_log_files)

    def _pin(self, page_nos: Sequence[int], commit_seqs: Sequence[int],
             images: Sequence[memoryview]) -> None:
        """Before a batch is written: serve its pages from memory while the data file changes."""
        with self._state:
            for page_no, commit_seq, image in zip(page_nos, commit_seqs, images, strict=True):
                entry = self._overlay.get(page_no)
                if entry is None or entry[0] < commit_seq:
                    self._overlay[page_no] = (commit_seq, image)
            self._generation += 1

    def _unpin(self, page_nos: Sequence[int], commit_seqs: Sequence[int],
               images: Sequence[memoryview]) -> None:
        """After a batch is written: the data file now holds these images; drop them (and any
        older ones) from the overlay."""
        with self._state:
            for page_no, commit_seq in zip(page_nos, commit_seqs, strict=True):
                entry = self._overlay.get(page_no)
                if entry is not None and entry[0] <= commit_seq:
                    del self._overlay[page_no]
            self._applied_seq = max(self._applied_seq, max(commit_seqs, default=0))
            self._state.notify_all()

    def _run_checkpointer(self) -> None:
        while True:
            with self._state:
                while not self._stop and self._broken is None and not (
                        self._log_bytes >= self._checkpoint_bytes
                        or self._overlay_bytes() > self._overlay_limit):
                    self._state.wait()
                if self._stop or self._broken is not None:
                    return
            try:
                self.checkpoint()
            except ClosedError:
                return
            except PagewalError as error:
                # Writers waiting for overlay space must hear of it rather than wait forever.
                self._break(f"an automatic checkpoint failed: {error}", error)
                return

    # ------------------------------------------------------------------ closing, state

    def close(self) -> None:
        """Stop the checkpointer, make staged commits durable, close the log and the data
        file. Idempotent. Does not checkpoint: the next :meth:`open` replays the log."""
        with self._state:
            if self._closed:
                return
            self._closed = self._stop = True
            self._state.notify_all()
        try:
            if self._checkpointer is not None:
                self._checkpointer.join()
            with self._checkpoint_lock:  # a checkpoint another thread runs finishes first
                if self._wal is not None:
                    self._wal.close()
        finally:
            with self._state:
                while self._readers:
                    self._state.wait()
            if self._data_fd is not None:
                self._fs.close(self._data_fd)
            if self._lock is not None:
                self._fs.unlock(self._lock)
        if self._broken is not None:
            raise BrokenLogError(self._broken_message()) from self._broken[1]

    def statistics(self) -> PagerStats:
        """A snapshot of the counters."""
        wal_stats = None if self._wal is None else self._wal.statistics()
        with self._state:
            return PagerStats(
                page_size=self._page_size, page_count=self._page_count,
                overlay_pages=len(self._overlay), overlay_bytes=self._overlay_bytes(),
                overlay_limit_bytes=self._overlay_limit,
                log_bytes_since_checkpoint=self._log_bytes,
                checkpoint_position=self._checkpointed,
                checkpoints=self._counters["checkpoints"],
                checkpoint_seconds_total=self._checkpoint_seconds,
                pages_checkpointed=self._counters["pages_checkpointed"],
                transactions_committed=self._counters["transactions"],
                overlay_waits=self._counters["overlay_waits"], wal=wal_stats)

    def _check_page_no(self, page_no: object) -> int:
        if not isinstance(page_no, int) or isinstance(page_no, bool):
            raise InvalidPageError(f"page_no {page_no!r} is not an integer")
        if not 0 <= page_no <= MAX_PAGE_NO:
            raise InvalidPageError(f"page_no {page_no} is outside 0..{MAX_PAGE_NO}")
        return page_no

    def _check_writable_page_no(self, page_no: object) -> int:
        """A page number a transaction may write: one the data file can hold, so that every
        acknowledged commit can be checkpointed."""
        page_no = self._check_page_no(page_no)
        if page_no >= self._limit.pages:
            raise InvalidPageError(
                f"{self._files.path(self._files.db_name)}: page {page_no} is past the store's "
                f"limit of {self._limit.pages:,} pages of {self._page_size} bytes "
                f"(0..{self._limit.pages - 1:,}): {self._limit.reason}")
        return page_no

    def _check_image(self, page_no: int, data: object) -> bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidPageError(f"page {page_no}: the image must be bytes-like, not "
                                   f"{type(data).__name__}")
        image = bytes(data)
        if len(image) != self._page_size:
            raise InvalidPageError(f"page {page_no}: the image is {len(image)} bytes; pages of "
                                   f"this store are exactly {self._page_size} bytes")
        return image

    def _writable_log(self, refusal: str) -> Wal:
        """The log, or :class:`ReadOnlyError` (``refusal`` says what was refused)."""
        if self._wal is None:
            raise ReadOnlyError(f"{self._files.path(self._files.db_name)}: opened read_only, the "
                                f"store {refusal}; open it without read_only to write")
        return self._wal

    def _raise_if_unusable(self) -> None:
        """Call with ``_state`` held."""
        if self._broken is not None:
            raise BrokenLogError(self._broken_message()) from self._broken[1]
        if self._closed:
            raise ClosedError(f"{self._files.path(self._files.db_name)}: the pager is closed")

    def _break(self, message: str, cause: BaseException) -> None:
        with self._state:
            if self._broken is None:
                self._broken = (message, cause)
            self._state.notify_all()

    def _broken_message(self) -> str:
        assert self._broken is not None
        return f"{self._files.path(self._files.db_name)}: {self._broken[0]}"


class Transaction:
    """A set of page writes that commit together (all or nothing, also across a crash).

    Use from one thread. As a context manager it commits on a clean exit and discards its
    writes on an exception. Reads see the transaction's own writes, then committed pages.
    """

    def __init__(self, pager: WalPager, txn_id: int) -> None:
        self._pager = pager
        self._txn_id = txn_id
        self._writes: dict[int, bytes] = {}
        self._finished = False
        self.ticket: Ticket | None = None
        """The commit's ticket once committed (None for a transaction that wrote nothing)."""

    def read(self, page_no: int) -> bytes:
        """This transaction's write of ``page_no`` if any, else the committed page."""
        self._raise_if_finished()
        image = self._writes.get(page_no)
        return image if image is not None else self._pager.read(page_no)

    def write(self, page_no: int, data: bytes | bytearray | memoryview) -> None:
        """Replace ``page_no`` with ``data`` (exactly ``page_size`` bytes) at commit.

        Raises :class:`InvalidPageError` for a page number past ``pager.max_pages`` (the
        message names the limit and how to raise it) or a wrong-sized image."""
        self._raise_if_finished()
        page_no = self._pager._check_writable_page_no(page_no)
        self._writes[page_no] = self._pager._check_image(page_no, data)

    def commit(self, *, durable: bool = True) -> Ticket | None:
        """Commit the writes as one log commit.

        ``durable=True``: return once it is durable (see :class:`WalPager`); it is visible to
        readers from then on. ``durable=False``: return once it is staged; it is visible at
        once and becomes durable within the log's flush delay (a crash before that loses it,
        whole); ``pager.wait_durable(ticket)`` waits for it. Returns the ticket (None if
        nothing was written). Raises :class:`BrokenLogError` or :class:`ClosedError` if the
        store cannot take commits; the transaction is finished either way.
        """
        self._raise_if_finished()
        self._finished = True
        if not self._writes:
            return None
        self.ticket = self._pager._commit(self._writes, self._txn_id, durable)
        return self.ticket

    def rollback(self) -> None:
        """Discard the writes."""
        self._finished = True
        self._writes.clear()

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._finished:
            return
        if exc is None:
            self.commit()
        else:
            self.rollback()

    def _raise_if_finished(self) -> None:
        if self._finished:
            raise ClosedError("the transaction has already been committed or rolled back")
