"""Creates the temporary files of the next epochs ahead of time, and closes published ones,
off the commit path.

Creating a file is a directory operation whose cost on shared disks swings between tens and
hundreds of microseconds; the publisher would otherwise pay it once per epoch while committers
wait. A background thread keeps the next few epochs' ``<segment>.tmp`` files created and open.
They are only temporary files: invariant 4 still holds (recovery deletes any it finds), and
the publisher still writes, fsyncs, renames and fsyncs the directory in that order. Closing a
published file's descriptor is not part of that protocol, so it is handed here too
(:meth:`TempFilePrecreator.retire`): one system call less for the publisher, which matters when
every system call must win the GIL back from busy threads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from ._fs import FileMode, FileSystem

AHEAD = 2  # epochs whose temporary file is kept ready


class TempFilePrecreator:
    """Keeps ``open_for_write(path_of(e))`` done for the next :data:`AHEAD` epochs, and closes
    the descriptors handed to :meth:`retire`."""

    def __init__(
        self, fs: FileSystem, path_of: Callable[[int], str], first_epoch: int, *,
        mode: FileMode | None = None,
    ) -> None:
        self._fs = fs
        self._path_of = path_of
        self._mode = mode
        self._ready: dict[int, int] = {}  # epoch -> open descriptor
        self._next = first_epoch  # the lowest epoch that may still be asked for
        self._creating: int | None = None  # the epoch whose file is being opened right now
        self._can_create = True  # False after an open failed: the publisher creates its own
        self._retired: list[int] = []  # descriptors to close
        self._cv = threading.Condition(threading.Lock())
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="pagewal-precreate", daemon=True)
        self._thread.start()

    def take(self, epoch: int) -> int | None:
        """The open descriptor of ``epoch``'s temporary file, or None if it is not ready.

        After this returns, the background thread never opens ``epoch``'s file: the caller may
        create it itself (files are created with ``O_EXCL``: two creations must never race).
        """
        with self._cv:
            while self._creating == epoch:
                self._cv.wait()
            self._next = max(self._next, epoch + 1)
            fd = self._ready.pop(epoch, None)
            self._cv.notify_all()
            return fd

    def retire(self, fd: int) -> None:
        """Close ``fd`` (a published segment's) in the background."""
        with self._cv:
            if not self._stop:
                self._retired.append(fd)
                self._cv.notify_all()
                return
        self._fs.close(fd)

    def close(self) -> None:
        """Stop, close what was retired, and remove the temporary files nobody took. Safe to
        call from any thread, more than once."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join()
        with self._cv:
            unused, self._ready = self._ready, {}
            retired, self._retired = self._retired, []
        for fd in retired:
            with contextlib.suppress(OSError):
                self._fs.close(fd)
        for epoch, fd in unused.items():
            with contextlib.suppress(OSError):
                self._fs.close(fd)
            with contextlib.suppress(OSError):
                self._fs.unlink(self._path_of(epoch))

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._retired and self._missing() is None:
                    self._cv.wait()
                if self._stop:
                    return
                retired, self._retired = self._retired, []
                epoch = self._missing()
                self._creating = epoch
            for published in retired:
                with contextlib.suppress(OSError):  # already durable; nothing to report
                    self._fs.close(published)
            if epoch is None:
                continue
            fd: int | None = None
            try:
                fd = self._fs.open_for_write(self._path_of(epoch), self._mode)
            except OSError:
                # The publisher creates its own files and reports any real failure (such as
                # a ForeignFileError: something not the log's own at the name).
                pass
            finally:
                with self._cv:
                    self._creating = None
                    if fd is None:
                        self._can_create = False
                    else:
                        self._ready[epoch] = fd
                    self._cv.notify_all()

    def _missing(self) -> int | None:
        if not self._can_create:
            return None
        for epoch in range(self._next, self._next + AHEAD):
            if epoch not in self._ready:
                return epoch
        return None
