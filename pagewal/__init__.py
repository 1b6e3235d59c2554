"""pagewal: a parallel, per-core write-ahead log for page stores.

Stage page after-images from many threads, make them durable together once per epoch (group
commit), and after any crash recover exactly the committed pages. See README.md for the
durability promise of each setting. :class:`WalPager` is a page store built on the log.
"""

from ._chain import Record, RecoveryResult, SegmentInfo, SkippedSegment
from ._checkpoint import CheckpointResult
from ._codec import MAX_IMAGE_SIZE, ChainPosition, DecodedSegment, SegmentHeader, decode_segment
from ._config import FsyncMode, Mode, WalConfig
from ._errors import (
    BrokenLogError,
    CheckpointFailedError,
    CheckpointMissingError,
    ClosedError,
    ConfigError,
    CorruptSegmentError,
    ForeignFileError,
    ImageTooLargeError,
    InvalidCommitError,
    InvalidPageError,
    InvalidPositionError,
    LogLockedError,
    PagewalError,
    ReadOnlyError,
    WrongLogError,
)
from ._fs import FileMode, FileSystem, OsFileSystem
from ._layout import CheckpointRebuild, CheckpointRecord
from ._pager import PagerStats, Transaction, WalPager
from ._recovery import read_log, rebuild_checkpoint, recover
from ._stats import FallbackReason, Ticket, WalStats
from ._wal import Wal

__version__ = "0.1.0"

__all__ = [
    "MAX_IMAGE_SIZE",
    "BrokenLogError",
    "ChainPosition",
    "CheckpointFailedError",
    "CheckpointMissingError",
    "CheckpointRebuild",
    "CheckpointRecord",
    "CheckpointResult",
    "ClosedError",
    "ConfigError",
    "CorruptSegmentError",
    "DecodedSegment",
    "FallbackReason",
    "FileMode",
    "FileSystem",
    "ForeignFileError",
    "FsyncMode",
    "ImageTooLargeError",
    "InvalidCommitError",
    "InvalidPageError",
    "InvalidPositionError",
    "LogLockedError",
    "Mode",
    "OsFileSystem",
    "PagerStats",
    "PagewalError",
    "ReadOnlyError",
    "Record",
    "RecoveryResult",
    "SegmentHeader",
    "SegmentInfo",
    "SkippedSegment",
    "Ticket",
    "Transaction",
    "Wal",
    "WalConfig",
    "WalPager",
    "WalStats",
    "WrongLogError",
    "decode_segment",
    "read_log",
    "rebuild_checkpoint",
    "recover",
]
