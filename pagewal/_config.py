"""Configuration: one frozen value object, built in code or from ``PAGEWAL_*`` variables.

Pure: parsing and validation only, no I/O (the environment is passed in as a mapping).
Every value is validated in one place, the knob table below; an invalid :class:`WalConfig`
cannot exist, and a malformed variable raises :class:`ConfigError` naming the variable, the
value and what is accepted, never a silent fallback to a default.

What each knob means for a crash is written next to it (see also README, "Durability").
"""

from __future__ import annotations

import difflib
import enum
import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._errors import ConfigError

MAX_LANES = 1024
MIN_LANE_CAPACITY = 4096
MAX_LANE_CAPACITY = 1 << 30
MAX_INTERVAL_MS = 60_000.0
MIN_CHECKPOINT_BYTES = 64 << 10
MAX_CHECKPOINT_BYTES = 1 << 40
MIN_LOG_FILE_BYTES = 64 << 10
MAX_LOG_FILE_BYTES = 1 << 40
LOG_FILE_ALIGNMENT = 4096
MAX_INFLIGHT_EPOCHS = 64


class Mode(enum.StrEnum):
    """How commits are staged.

    ``AUTO``: per-lane parallel staging; commits that do not fit a lane take the serialized path.
    ``CONSERVATIVE``: one lane, every commit on the serialized path (reason ``operator_forced``).
    ``SHADOW_COMPARE``: like ``AUTO``, and every epoch is also encoded on the serialized path and
    compared before it is published; a divergence publishes the serialized encoding and switches
    the log to conservative mode.
    """

    AUTO = "auto"
    CONSERVATIVE = "conservative"
    SHADOW_COMPARE = "shadow_compare"


class FsyncMode(enum.StrEnum):
    """What an acknowledged commit survives.

    ``FULL``: power loss. A commit is acknowledged after its segment's bytes and directory
    entry are fsynced.
    ``NORMAL``: a process crash. Segments are written and renamed before the ack but fsynced at
    most once per epoch interval and at close; a power loss may lose (or tear) the newest
    segments, which ``recover(skip_corrupt=True)`` then leaves out.
    ``OFF``: nothing is fsynced. For tests and benchmarks only.
    """

    FULL = "full"
    NORMAL = "normal"
    OFF = "off"


_MODE_ALIASES = {
    "auto": Mode.AUTO,
    "conservative": Mode.CONSERVATIVE,
    "serialized": Mode.CONSERVATIVE,
    "single_lane": Mode.CONSERVATIVE,
    "shadow_compare": Mode.SHADOW_COMPARE,
    "shadow": Mode.SHADOW_COMPARE,
}
_FSYNC_NAMES = {m.value: m for m in FsyncMode}
_BYTE_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30,
               "gib": 1 << 30}
_BYTES_RE = re.compile(r"^\s*([0-9]+)\s*([a-z]*)\s*$", re.IGNORECASE | re.ASCII)
_INT_RE = re.compile(r"^\s*[0-9]+\s*$", re.ASCII)
_MS_RE = re.compile(r"^\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$", re.ASCII)


def _parse_bytes(text: str) -> int:
    match = _BYTES_RE.match(text)
    if match is None or match.group(2).lower() not in _BYTE_UNITS:
        raise ValueError(text)
    return int(match.group(1)) * _BYTE_UNITS[match.group(2).lower()]


def _parse_int(text: str) -> int:
    if _INT_RE.match(text) is None:
        raise ValueError(text)
    return int(text)


def _parse_ms(text: str) -> float:
    if _MS_RE.match(text) is None:
        raise ValueError(text)
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _parse_mode(text: str) -> Mode:
    return _MODE_ALIASES[text.strip().lower()]


def _parse_fsync(text: str) -> FsyncMode:
    return _FSYNC_NAMES[text.strip().lower()]


@attrs.frozen
class _Knob:
    """One configuration field: its variable, how to parse it and what it accepts."""

    field: str
    variable: str
    parse: Callable[[str], Any]
    check: Callable[[Any], bool]
    accepted: str


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_ms(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value <= MAX_INTERVAL_MS
    )


_KNOBS = (
    _Knob("mode", "PAGEWAL_MODE", _parse_mode, lambda v: isinstance(v, Mode),
          "one of auto, conservative (aliases serialized, single_lane), "
          "shadow_compare (alias shadow)"),
    _Knob("lanes", "PAGEWAL_LANES", _parse_int,
          lambda v: _is_int(v) and 1 <= v <= MAX_LANES, f"an integer from 1 to {MAX_LANES}"),
    _Knob("epoch_interval_ms", "PAGEWAL_EPOCH_INTERVAL_MS", _parse_ms, _is_ms,
          f"a number of milliseconds greater than 0 and at most {MAX_INTERVAL_MS:g}"),
    _Knob("lane_capacity_bytes", "PAGEWAL_LANE_CAPACITY_BYTES", _parse_bytes,
          lambda v: _is_int(v) and MIN_LANE_CAPACITY <= v <= MAX_LANE_CAPACITY,
          f"a byte count from {MIN_LANE_CAPACITY} to {MAX_LANE_CAPACITY} "
          "(suffixes K/KiB, M/MiB, G/GiB allowed)"),
    _Knob("max_batch_bytes", "PAGEWAL_MAX_BATCH_BYTES", _parse_bytes,
          lambda v: v is None or (_is_int(v) and v >= 1),
          "a byte count of at least 1 and at most the lane capacity "
          "(suffixes K/KiB, M/MiB, G/GiB allowed)"),
    _Knob("max_flush_delay_ms", "PAGEWAL_MAX_FLUSH_DELAY_MS", _parse_ms,
          lambda v: v is None or _is_ms(v),
          f"a number of milliseconds greater than 0 and at most {MAX_INTERVAL_MS:g}"),
    _Knob("shadow_compare_per_mille", "PAGEWAL_SHADOW_COMPARE_PER_MILLE", _parse_int,
          lambda v: _is_int(v) and 0 <= v <= 1000, "an integer from 0 to 1000"),
    _Knob("fsync", "PAGEWAL_FSYNC", _parse_fsync, lambda v: isinstance(v, FsyncMode),
          "one of full, normal, off"),
    _Knob("checkpoint_bytes", "PAGEWAL_CHECKPOINT_BYTES", _parse_bytes,
          lambda v: _is_int(v) and MIN_CHECKPOINT_BYTES <= v <= MAX_CHECKPOINT_BYTES,
          f"a byte count from {MIN_CHECKPOINT_BYTES} to {MAX_CHECKPOINT_BYTES} "
          "(suffixes K/KiB, M/MiB, G/GiB allowed)"),
    _Knob("log_file_bytes", "PAGEWAL_LOG_FILE_BYTES", _parse_bytes,
          lambda v: (_is_int(v) and MIN_LOG_FILE_BYTES <= v <= MAX_LOG_FILE_BYTES
                     and v % LOG_FILE_ALIGNMENT == 0),
          f"a byte count from {MIN_LOG_FILE_BYTES} to {MAX_LOG_FILE_BYTES}, a multiple of "
          f"{LOG_FILE_ALIGNMENT} (suffixes K/KiB, M/MiB, G/GiB allowed)"),
    _Knob("inflight_epochs", "PAGEWAL_INFLIGHT_EPOCHS", _parse_int,
          lambda v: _is_int(v) and 1 <= v <= MAX_INFLIGHT_EPOCHS,
          f"an integer from 1 to {MAX_INFLIGHT_EPOCHS}"),
)
_KNOB_BY_FIELD = {knob.field: knob for knob in _KNOBS}
_KNOB_BY_VARIABLE = {knob.variable: knob for knob in _KNOBS}


def _validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    knob = _KNOB_BY_FIELD[attribute.name]
    if not knob.check(value):
        raise ConfigError(knob.field, value, knob.accepted)


def _to_mode(value: object) -> object:
    """Accept a mode's name or alias as well as the enum; anything else is left to validation."""
    if isinstance(value, str) and not isinstance(value, Mode):
        return _MODE_ALIASES.get(value.strip().lower(), value)
    return value


def _to_fsync(value: object) -> object:
    if isinstance(value, str) and not isinstance(value, FsyncMode):
        return _FSYNC_NAMES.get(value.strip().lower(), value)
    return value


def _default_lanes() -> int:
    return max(1, min(MAX_LANES, os.cpu_count() or 1))


@attrs.frozen(kw_only=True)
class WalConfig:
    """Immutable configuration of a log. Every field is validated at construction.

    ``lanes``: staging lanes (default: CPU count). More lanes mean less lock contention between
    committing threads; durability is unaffected.
    ``epoch_interval_ms``: the group-commit period when nobody waits. A commit that is waited
    on is sealed sooner (adaptive sealing, bounded by ``max_flush_delay_ms``). Unacknowledged
    commits of an open epoch are lost by a crash, whatever the interval.
    ``lane_capacity_bytes``: staging bytes per lane per epoch. Staged memory is bounded by
    ``(inflight_epochs + 1) * lanes * lane_capacity_bytes`` for the lanes plus as much again
    for serialized-path commits (one commit larger than that is admitted alone); writers wait
    when it is reached.
    ``max_batch_bytes``: the largest encoded commit on the parallel path (default: the lane
    capacity); larger commits take the serialized path.
    ``fsync``: see :class:`FsyncMode`; the only knob that changes what a crash can lose.
    ``checkpoint_bytes`` (used by :class:`pagewal.WalPager`): log bytes written since the last
    checkpoint that start an automatic checkpoint; the pager's read overlay holds at most about
    twice this much (writers wait beyond that). Does not change what a crash can lose.
    ``log_file_bytes``: capacity of one preallocated log file (DESIGN §4.1). Files are created
    at this size, zero-filled, ahead of need and recycled after a checkpoint; an epoch larger
    than a file gets a file of its own. Does not change what a crash can lose.
    ``inflight_epochs``: sealed epochs written concurrently (1: one at a time). Commits are
    still acknowledged strictly in order (invariant 3); does not change what a crash can lose.
    """

    mode: Mode = attrs.field(default=Mode.AUTO, converter=_to_mode, validator=_validate)
    lanes: int = attrs.field(factory=_default_lanes, validator=_validate)
    epoch_interval_ms: float = attrs.field(default=10.0, validator=_validate)
    lane_capacity_bytes: int = attrs.field(default=4 << 20, validator=_validate)
    max_batch_bytes: int | None = attrs.field(default=None, validator=_validate)
    max_flush_delay_ms: float | None = attrs.field(default=None, validator=_validate)
    shadow_compare_per_mille: int = attrs.field(default=0, validator=_validate)
    fsync: FsyncMode = attrs.field(default=FsyncMode.FULL, converter=_to_fsync,
                                   validator=_validate)
    checkpoint_bytes: int = attrs.field(default=64 << 20, validator=_validate)
    log_file_bytes: int = attrs.field(default=64 << 20, validator=_validate)
    inflight_epochs: int = attrs.field(default=4, validator=_validate)

    def __attrs_post_init__(self) -> None:
        if self.max_batch_bytes is not None and self.max_batch_bytes > self.lane_capacity_bytes:
            knob = _KNOB_BY_FIELD["max_batch_bytes"]
            raise ConfigError(knob.field, self.max_batch_bytes,
                              f"{knob.accepted}, here {self.lane_capacity_bytes}")

    @property
    def effective_lanes(self) -> int:
        """Lanes actually used: one in conservative mode."""
        return 1 if self.mode is Mode.CONSERVATIVE else self.lanes

    @property
    def effective_max_batch_bytes(self) -> int:
        """The parallel path's commit size limit, defaulted to the lane capacity."""
        if self.max_batch_bytes is None:
            return self.lane_capacity_bytes
        return self.max_batch_bytes

    @property
    def effective_max_flush_delay_ms(self) -> float:
        """Upper bound from a waited-on submit to its seal, defaulted to the epoch interval."""
        if self.max_flush_delay_ms is None:
            return self.epoch_interval_ms
        return self.max_flush_delay_ms

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> WalConfig:
        """Build a config from ``PAGEWAL_*`` variables (``os.environ`` by default).

        Keyword ``overrides`` win over the environment. Raises :class:`ConfigError` naming the
        variable for a malformed value, and for an unknown ``PAGEWAL_*`` variable (a typo must
        not silently leave a default in force).
        """
        texts = _env_texts(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for field, (variable, text) in texts.items():
            knob = _KNOB_BY_FIELD[field]
            try:
                value = knob.parse(text)
            except (ValueError, KeyError):
                raise ConfigError(variable, text, knob.accepted) from None
            # Checked even when an override replaces it: a bad variable is never ignored.
            if not knob.check(value):
                raise ConfigError(variable, text, knob.accepted)
            values[field] = value
        values.update(overrides)
        try:
            return cls(**values)
        except ConfigError as error:
            if error.variable not in texts or error.variable in overrides:
                raise
            variable, text = texts[error.variable]
            raise ConfigError(variable, text, error.accepted) from None


def _env_texts(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """The ``PAGEWAL_*`` variables present: field → (variable, raw text)."""
    texts: dict[str, tuple[str, str]] = {}
    for name, text in environ.items():
        if not name.startswith("PAGEWAL_"):
            continue
        knob = _KNOB_BY_VARIABLE.get(name)
        if knob is None:
            # A typo must not leave a default silently in force: an unknown name is an error,
            # with the nearest known one (names are upper case: PAGEWAL_lanes means LANES).
            close = difflib.get_close_matches(name.upper(), _KNOB_BY_VARIABLE, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            known = ", ".join(_KNOB_BY_VARIABLE)
            raise ConfigError(name, text, f"one of the known variables {known}{hint}")
        texts[knob.field] = (name, text)
    return texts


def config_sources(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Where each field of ``WalConfig.from_env(environ)`` comes from: a variable or default."""
    env = os.environ if environ is None else environ
    return {
        knob.field: (f"env {knob.variable}" if knob.variable in env else "default")
        for knob in _KNOBS
    }


def knob_variables() -> dict[str, str]:
    """Map of config field name to its environment variable."""
    return {knob.field: knob.variable for knob in _KNOBS}
