"""WalConfig: defaults, PAGEWAL_* parsing and validation, overrides, immutability (DESIGN §5)."""

from __future__ import annotations

import math
import os

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pagewal import ConfigError, FsyncMode, Mode, PagewalError, WalConfig
from pagewal._config import config_sources, knob_variables

MIB = 1 << 20
KIB = 1 << 10

# DESIGN §5, the table of knobs: variable -> config field.
DESIGN_VARIABLES = {
    "PAGEWAL_MODE": "mode",
    "PAGEWAL_LANES": "lanes",
    "PAGEWAL_EPOCH_INTERVAL_MS": "epoch_interval_ms",
    "PAGEWAL_LANE_CAPACITY_BYTES": "lane_capacity_bytes",
    "PAGEWAL_MAX_BATCH_BYTES": "max_batch_bytes",
    "PAGEWAL_MAX_FLUSH_DELAY_MS": "max_flush_delay_ms",
    "PAGEWAL_SHADOW_COMPARE_PER_MILLE": "shadow_compare_per_mille",
    "PAGEWAL_FSYNC": "fsync",
    "PAGEWAL_CHECKPOINT_BYTES": "checkpoint_bytes",  # used by the pager
    "PAGEWAL_LOG_FILE_BYTES": "log_file_bytes",
    "PAGEWAL_INFLIGHT_EPOCHS": "inflight_epochs",
}
FIELDS = {a.name for a in attrs.fields(WalConfig)}


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """os.environ without any PAGEWAL_* variable the test runner may have set."""
    for name in list(os.environ):
        if name.startswith("PAGEWAL_"):
            monkeypatch.delenv(name)
    return monkeypatch


# --------------------------------------------------------------------------- defaults


def test_knob_table_matches_the_design_variables_and_config_fields() -> None:
    assert knob_variables() == {field: var for var, field in DESIGN_VARIABLES.items()}
    assert set(DESIGN_VARIABLES.values()) == FIELDS


def test_defaults_match_the_design_table() -> None:
    config = WalConfig()
    assert config.mode is Mode.AUTO
    assert config.lanes == max(1, min(1024, os.cpu_count() or 1))
    assert config.epoch_interval_ms == 10
    assert config.lane_capacity_bytes == 4 * MIB
    assert config.max_batch_bytes is None
    assert config.effective_max_batch_bytes == 4 * MIB
    assert config.max_flush_delay_ms is None
    assert config.effective_max_flush_delay_ms == 10
    assert config.shadow_compare_per_mille == 0
    assert config.fsync is FsyncMode.FULL
    assert config.checkpoint_bytes == 64 * MIB


def test_from_env_with_no_variables_equals_the_defaults() -> None:
    assert WalConfig.from_env({}) == WalConfig()


@pytest.mark.parametrize(
    ("cpu_count", "lanes"),
    [(None, 1), (1, 1), (3, 3), (64, 64), (1024, 1024), (1025, 1024), (4096, 1024)],
)
def test_default_lanes_is_cpu_count_clamped_to_1_through_1024(
    monkeypatch: pytest.MonkeyPatch, cpu_count: int | None, lanes: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cpu_count)
    assert WalConfig().lanes == lanes
    assert WalConfig.from_env({}).lanes == lanes


def test_effective_max_batch_bytes_defaults_to_the_configured_lane_capacity() -> None:
    assert WalConfig(lane_capacity_bytes=64 * KIB).effective_max_batch_bytes == 64 * KIB
    config = WalConfig(lane_capacity_bytes=64 * KIB, max_batch_bytes=1000)
    assert config.effective_max_batch_bytes == 1000


def test_effective_max_flush_delay_defaults_to_the_configured_epoch_interval() -> None:
    assert WalConfig(epoch_interval_ms=3.5).effective_max_flush_delay_ms == 3.5
    config = WalConfig(epoch_interval_ms=3.5, max_flush_delay_ms=1.25)
    assert config.effective_max_flush_delay_ms == 1.25


@pytest.mark.parametrize("mode", ["conservative", "serialized", "single_lane"])
def test_conservative_mode_uses_exactly_one_lane_whatever_lanes_says(mode: str) -> None:
    config = WalConfig(mode=mode, lanes=8)
    assert config.mode is Mode.CONSERVATIVE
    assert config.lanes == 8
    assert config.effective_lanes == 1


@pytest.mark.parametrize("mode", [Mode.AUTO, Mode.SHADOW_COMPARE])
def test_parallel_modes_use_the_configured_lane_count(mode: Mode) -> None:
    assert WalConfig(mode=mode, lanes=8).effective_lanes == 8


# --------------------------------------------------------------------------- valid env values

VALID_ENV = [
    ("PAGEWAL_MODE", "auto", Mode.AUTO),
    ("PAGEWAL_MODE", "conservative", Mode.CONSERVATIVE),
    ("PAGEWAL_MODE", "serialized", Mode.CONSERVATIVE),
    ("PAGEWAL_MODE", "single_lane", Mode.CONSERVATIVE),
    ("PAGEWAL_MODE", "shadow_compare", Mode.SHADOW_COMPARE),
    ("PAGEWAL_MODE", "shadow", Mode.SHADOW_COMPARE),
    ("PAGEWAL_MODE", "  Shadow\n", Mode.SHADOW_COMPARE),
    ("PAGEWAL_MODE", "SERIALIZED", Mode.CONSERVATIVE),
    ("PAGEWAL_LANES", "1", 1),
    ("PAGEWAL_LANES", "1024", 1024),
    ("PAGEWAL_LANES", " 8 ", 8),
    ("PAGEWAL_LANES", "16\n", 16),
    ("PAGEWAL_EPOCH_INTERVAL_MS", "10", 10.0),
    ("PAGEWAL_EPOCH_INTERVAL_MS", "0.5", 0.5),
    ("PAGEWAL_EPOCH_INTERVAL_MS", " 2.5 ", 2.5),
    ("PAGEWAL_EPOCH_INTERVAL_MS", "1e3", 1000.0),
    ("PAGEWAL_EPOCH_INTERVAL_MS", "60000", 60000.0),
    ("PAGEWAL_LANE_CAPACITY_BYTES", "4MiB", 4 * MIB),
    ("PAGEWAL_LANE_CAPACITY_BYTES", "64K", 64 * KIB),
    ("PAGEWAL_LANE_CAPACITY_BYTES", "64k", 64 * KIB),
    ("PAGEWAL_LANE_CAPACITY_BYTES", "64KiB", 64 * KIB),
    ("PAGEWAL_LANE_CAPACITY_BYTES", " 8 mib ", 8 * MIB),
    ("PAGEWAL_LANE_CAPACITY_BYTES", "2M", 2 * MIB),
    ("PAGEWAL_LANE_CAPACITY_BYTES", "1G", 1 << 30),
    ("PAGEWAL_LANE_CAPACITY_BYTES", "1GiB", 1 << 30),
    ("PAGEWAL_LANE_CAPACITY_BYTES", "4096", 4096),
    ("PAGEWAL_MAX_BATCH_BYTES", "64K", 64 * KIB),
    ("PAGEWAL_MAX_BATCH_BYTES", "1", 1),
    ("PAGEWAL_MAX_BATCH_BYTES", "4MiB", 4 * MIB),
    ("PAGEWAL_MAX_FLUSH_DELAY_MS", "2", 2.0),
    ("PAGEWAL_MAX_FLUSH_DELAY_MS", " 0.25", 0.25),
    ("PAGEWAL_SHADOW_COMPARE_PER_MILLE", "0", 0),
    ("PAGEWAL_SHADOW_COMPARE_PER_MILLE", "1000", 1000),
    ("PAGEWAL_SHADOW_COMPARE_PER_MILLE", " 250 ", 250),
    ("PAGEWAL_FSYNC", "full", FsyncMode.FULL),
    ("PAGEWAL_FSYNC", "normal", FsyncMode.NORMAL),
    ("PAGEWAL_FSYNC", "off", FsyncMode.OFF),
    ("PAGEWAL_FSYNC", " OFF ", FsyncMode.OFF),
    ("PAGEWAL_FSYNC", "Normal", FsyncMode.NORMAL),
    ("PAGEWAL_CHECKPOINT_BYTES", "64K", 64 * KIB),
    ("PAGEWAL_CHECKPOINT_BYTES", "256 MiB", 256 * MIB),
    ("PAGEWAL_CHECKPOINT_BYTES", "1099511627776", 1 << 40),
    ("PAGEWAL_LOG_FILE_BYTES", "64K", 64 * KIB),
    ("PAGEWAL_LOG_FILE_BYTES", "1 MiB", MIB),
    ("PAGEWAL_INFLIGHT_EPOCHS", "1", 1),
    ("PAGEWAL_INFLIGHT_EPOCHS", "64", 64),
]


def test_valid_value_table_covers_every_design_variable() -> None:
    assert {variable for variable, _, _ in VALID_ENV} == set(DESIGN_VARIABLES)


@pytest.mark.parametrize(("variable", "text", "expected"), VALID_ENV)
def test_from_env_parses_each_valid_variable_into_its_field(
    variable: str, text: str, expected: object
) -> None:
    config = WalConfig.from_env({variable: text})
    assert getattr(config, DESIGN_VARIABLES[variable]) == expected
    # Every other field keeps its default.
    default = WalConfig()
    for field in FIELDS - {DESIGN_VARIABLES[variable]}:
        assert getattr(config, field) == getattr(default, field)


def test_from_env_applies_all_variables_together() -> None:
    env = {
        "PAGEWAL_MODE": "shadow",
        "PAGEWAL_LANES": "3",
        "PAGEWAL_EPOCH_INTERVAL_MS": "7.5",
        "PAGEWAL_LANE_CAPACITY_BYTES": "64K",
        "PAGEWAL_MAX_BATCH_BYTES": "16K",
        "PAGEWAL_MAX_FLUSH_DELAY_MS": "2",
        "PAGEWAL_SHADOW_COMPARE_PER_MILLE": "125",
        "PAGEWAL_FSYNC": "normal",
        "PATH": "/usr/bin",
    }
    assert WalConfig.from_env(env) == WalConfig(
        mode=Mode.SHADOW_COMPARE, lanes=3, epoch_interval_ms=7.5, lane_capacity_bytes=64 * KIB,
        max_batch_bytes=16 * KIB, max_flush_delay_ms=2.0, shadow_compare_per_mille=125,
        fsync=FsyncMode.NORMAL,
    )


def test_max_batch_bytes_may_equal_a_lane_capacity_set_from_the_environment() -> None:
    config = WalConfig.from_env(
        {"PAGEWAL_LANE_CAPACITY_BYTES": "64K", "PAGEWAL_MAX_BATCH_BYTES": "65536"})
    assert config.max_batch_bytes == config.lane_capacity_bytes == 64 * KIB


def test_from_env_without_a_mapping_reads_os_environ(clean_environ: pytest.MonkeyPatch) -> None:
    clean_environ.setenv("PAGEWAL_LANES", "5")
    clean_environ.setenv("PAGEWAL_FSYNC", "off")
    config = WalConfig.from_env()
    assert config.lanes == 5
    assert config.fsync is FsyncMode.OFF


@given(
    lanes=st.integers(1, 1024),
    left=st.sampled_from(["", " ", "\t", "  "]),
    right=st.sampled_from(["", " ", "\n", " \t"]),
)
def test_any_lane_count_from_1_to_1024_is_accepted_with_surrounding_whitespace(
    lanes: int, left: str, right: str
) -> None:
    assert WalConfig.from_env({"PAGEWAL_LANES": f"{left}{lanes}{right}"}).lanes == lanes


@given(lanes=st.one_of(st.integers(1025, 10**12), st.just(0)))
def test_any_lane_count_outside_1_to_1024_is_rejected(lanes: int) -> None:
    with pytest.raises(ConfigError) as info:
        WalConfig.from_env({"PAGEWAL_LANES": str(lanes)})
    assert info.value.variable == "PAGEWAL_LANES"


@given(
    count=st.integers(1, 4096),
    unit=st.sampled_from(
        [("", 1), ("K", KIB), ("k", KIB), ("KiB", KIB), ("kib", KIB), ("M", MIB), ("MiB", MIB),
         ("mIb", MIB), ("G", 1 << 30), ("GiB", 1 << 30)]),
    space=st.sampled_from(["", " "]),
)
def test_byte_suffixes_scale_by_powers_of_1024_and_range_is_enforced(
    count: int, unit: tuple[str, int], space: str
) -> None:
    suffix, multiplier = unit
    text = f"{count}{space}{suffix}"
    value = count * multiplier
    env = {"PAGEWAL_LANE_CAPACITY_BYTES": text}
    if 4096 <= value <= 1 << 30:
        assert WalConfig.from_env(env).lane_capacity_bytes == value
    else:
        with pytest.raises(ConfigError) as info:
            WalConfig.from_env(env)
        assert info.value.variable == "PAGEWAL_LANE_CAPACITY_BYTES"


# --------------------------------------------------------------------------- malformed env values

# Words the error message must contain to say what is accepted.
ACCEPTED_WORDS = {
    "PAGEWAL_MODE": ["auto", "conservative", "serialized", "single_lane", "shadow_compare",
                     "shadow"],
    "PAGEWAL_LANES": ["1", "1024"],
    "PAGEWAL_EPOCH_INTERVAL_MS": ["milliseconds", "60000"],
    "PAGEWAL_LANE_CAPACITY_BYTES": ["4096", str(1 << 30), "KiB", "MiB"],
    "PAGEWAL_MAX_BATCH_BYTES": ["lane capacity", "KiB", "MiB"],
    "PAGEWAL_MAX_FLUSH_DELAY_MS": ["milliseconds", "60000"],
    "PAGEWAL_SHADOW_COMPARE_PER_MILLE": ["0", "1000"],
    "PAGEWAL_FSYNC": ["full", "normal", "off"],
    "PAGEWAL_CHECKPOINT_BYTES": [str(64 * KIB), str(1 << 40), "KiB", "MiB"],
    "PAGEWAL_LOG_FILE_BYTES": [str(64 * KIB), str(1 << 40), "multiple of 4096"],
    "PAGEWAL_INFLIGHT_EPOCHS": ["1", "64"],
}

# Values that do not even parse: the error must carry the raw text.
UNPARSABLE_ENV = [
    ("PAGEWAL_MODE", "fast"),
    ("PAGEWAL_MODE", ""),
    ("PAGEWAL_MODE", "conservativ"),
    ("PAGEWAL_MODE", "auto,shadow"),
    ("PAGEWAL_LANES", "abc"),
    ("PAGEWAL_LANES", ""),
    ("PAGEWAL_LANES", "   "),
    ("PAGEWAL_LANES", "-1"),
    ("PAGEWAL_LANES", "4.0"),
    ("PAGEWAL_LANES", "1e2"),
    ("PAGEWAL_LANES", "0x10"),
    ("PAGEWAL_LANES", "+4"),
    ("PAGEWAL_EPOCH_INTERVAL_MS", "abc"),
    ("PAGEWAL_EPOCH_INTERVAL_MS", ""),
    ("PAGEWAL_EPOCH_INTERVAL_MS", "nan"),
    ("PAGEWAL_EPOCH_INTERVAL_MS", "NaN"),
    ("PAGEWAL_EPOCH_INTERVAL_MS", "inf"),
    ("PAGEWAL_EPOCH_INTERVAL_MS", "-inf"),
    ("PAGEWAL_EPOCH_INTERVAL_MS", "10ms"),
    ("PAGEWAL_LANE_CAPACITY_BYTES", "abc"),
    ("PAGEWAL_LANE_CAPACITY_BYTES", ""),
    ("PAGEWAL_LANE_CAPACITY_BYTES", "-1"),
    ("PAGEWAL_LANE_CAPACITY_BYTES", "4.5M"),
    ("PAGEWAL_LANE_CAPACITY_BYTES", "4TB"),
    ("PAGEWAL_LANE_CAPACITY_BYTES", "MiB"),
    ("PAGEWAL_MAX_BATCH_BYTES", "abc"),
    ("PAGEWAL_MAX_BATCH_BYTES", ""),
    ("PAGEWAL_MAX_BATCH_BYTES", "-1"),
    ("PAGEWAL_MAX_BATCH_BYTES", "4T"),
    ("PAGEWAL_MAX_FLUSH_DELAY_MS", "abc"),
    ("PAGEWAL_MAX_FLUSH_DELAY_MS", ""),
    ("PAGEWAL_MAX_FLUSH_DELAY_MS", "nan"),
    ("PAGEWAL_MAX_FLUSH_DELAY_MS", "inf"),
    ("PAGEWAL_SHADOW_COMPARE_PER_MILLE", "abc"),
    ("PAGEWAL_SHADOW_COMPARE_PER_MILLE", ""),
    ("PAGEWAL_SHADOW_COMPARE_PER_MILLE", "-1"),
    ("PAGEWAL_SHADOW_COMPARE_PER_MILLE", "0.5"),
    ("PAGEWAL_FSYNC", "sometimes"),
    ("PAGEWAL_FSYNC", ""),
    ("PAGEWAL_FSYNC", "true"),
    ("PAGEWAL_FSYNC", "fsync"),
    ("PAGEWAL_CHECKPOINT_BYTES", "lots"),
    ("PAGEWAL_CHECKPOINT_BYTES", ""),
    ("PAGEWAL_CHECKPOINT_BYTES", "-64K"),
    ("PAGEWAL_CHECKPOINT_BYTES", "1.5G"),
    ("PAGEWAL_LOG_FILE_BYTES", "big"),
    ("PAGEWAL_LOG_FILE_BYTES", ""),
    ("PAGEWAL_INFLIGHT_EPOCHS", "four"),
    ("PAGEWAL_INFLIGHT_EPOCHS", "1.5"),
]

# Values that parse but are out of range (or inconsistent with another knob).
OUT_OF_RANGE_ENV = [
    ("PAGEWAL_LANES", "0"),
    ("PAGEWAL_LANES", "1025"),
    ("PAGEWAL_EPOCH_INTERVAL_MS", "-5"),
    ("PAGEWAL_EPOCH_INTERVAL_MS", "0"),
    ("PAGEWAL_EPOCH_INTERVAL_MS", "60001"),
    ("PAGEWAL_LANE_CAPACITY_BYTES", "0"),
    ("PAGEWAL_LANE_CAPACITY_BYTES", "4095"),
    ("PAGEWAL_LANE_CAPACITY_BYTES", "1K"),
    ("PAGEWAL_LANE_CAPACITY_BYTES", "2G"),
    ("PAGEWAL_MAX_BATCH_BYTES", "0"),
    ("PAGEWAL_MAX_BATCH_BYTES", "8MiB"),  # larger than the default 4 MiB lane capacity
    ("PAGEWAL_MAX_FLUSH_DELAY_MS", "-1"),
    ("PAGEWAL_MAX_FLUSH_DELAY_MS", "0"),
    ("PAGEWAL_SHADOW_COMPARE_PER_MILLE", "1001"),
    ("PAGEWAL_CHECKPOINT_BYTES", "0"),
    ("PAGEWAL_CHECKPOINT_BYTES", "65535"),
    ("PAGEWAL_CHECKPOINT_BYTES", "2048G"),
    ("PAGEWAL_LOG_FILE_BYTES", "1000"),
    ("PAGEWAL_LOG_FILE_BYTES", "70000"),  # not a multiple of the alignment
    ("PAGEWAL_LOG_FILE_BYTES", "2TiB"),
    ("PAGEWAL_INFLIGHT_EPOCHS", "0"),
    ("PAGEWAL_INFLIGHT_EPOCHS", "65"),
]

def test_malformed_value_tables_cover_every_design_variable() -> None:
    assert {v for v, _ in UNPARSABLE_ENV} == set(DESIGN_VARIABLES)
    assert {v for v, _ in OUT_OF_RANGE_ENV} | {"PAGEWAL_MODE", "PAGEWAL_FSYNC"} == set(
        DESIGN_VARIABLES)


@pytest.mark.parametrize(("variable", "text"), UNPARSABLE_ENV + OUT_OF_RANGE_ENV)
def test_malformed_env_value_raises_config_error_naming_variable_and_accepted_values(
    variable: str, text: str
) -> None:
    # A valid neighbour shows the error is about the bad variable, not the first one seen.
    neighbour = {"PAGEWAL_FSYNC": "off"} if variable != "PAGEWAL_FSYNC" else {"PAGEWAL_LANES": "2"}
    with pytest.raises(ConfigError) as info:
        WalConfig.from_env({**neighbour, variable: text})
    error = info.value
    assert isinstance(error, ValueError)
    assert isinstance(error, PagewalError)
    assert error.variable == variable
    message = str(error)
    assert message.startswith(variable)
    for word in ACCEPTED_WORDS[variable]:
        assert word in message, (word, message)


@pytest.mark.parametrize(
    ("variable", "text"),
    UNPARSABLE_ENV + OUT_OF_RANGE_ENV,
)
def test_malformed_env_value_error_carries_and_shows_the_raw_text(
    variable: str, text: str
) -> None:
    with pytest.raises(ConfigError) as info:
        WalConfig.from_env({variable: text})
    assert info.value.value == text
    assert f"{variable}={text!r}" in str(info.value)


def test_max_batch_bytes_above_lane_capacity_names_max_batch_variable_and_the_capacity() -> None:
    env = {"PAGEWAL_LANE_CAPACITY_BYTES": "64K", "PAGEWAL_MAX_BATCH_BYTES": "65537"}
    with pytest.raises(ConfigError) as info:
        WalConfig.from_env(env)
    assert info.value.variable == "PAGEWAL_MAX_BATCH_BYTES"
    assert "PAGEWAL_MAX_BATCH_BYTES" in str(info.value)
    assert "65537" in str(info.value)
    assert str(64 * KIB) in str(info.value)


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("PAGEWAL_LANE", "PAGEWAL_LANES"),
        ("PAGEWAL_FSYNK", "PAGEWAL_FSYNC"),
        ("PAGEWAL_EPOCH_INTERVAL", "PAGEWAL_EPOCH_INTERVAL_MS"),
        ("PAGEWAL_MODES", "PAGEWAL_MODE"),
        ("PAGEWAL_lanes", "PAGEWAL_LANES"),  # names are upper case
        ("PAGEWAL_fsync", "PAGEWAL_FSYNC"),
        ("PAGEWAL_Lane_Capacity_Bytes", "PAGEWAL_LANE_CAPACITY_BYTES"),
    ],
)
def test_unknown_pagewal_variable_raises_with_a_did_you_mean_hint(
    typo: str, suggestion: str
) -> None:
    with pytest.raises(ConfigError) as info:
        WalConfig.from_env({typo: "4", "PAGEWAL_FSYNC": "off"})
    error = info.value
    assert isinstance(error, ValueError)
    assert error.variable == typo
    assert error.value == "4"
    assert f"did you mean {suggestion}" in str(error)


def test_unknown_pagewal_variable_without_a_close_match_still_raises_listing_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        WalConfig.from_env({"PAGEWAL_XYZZY_PLUGH": "1"})
    message = str(info.value)
    assert info.value.variable == "PAGEWAL_XYZZY_PLUGH"
    assert "did you mean" not in message
    for variable in DESIGN_VARIABLES:
        assert variable in message


def test_variables_without_the_pagewal_prefix_are_ignored() -> None:
    env = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "pagewal_lanes": "not a number",
        "XPAGEWAL_LANES": "0",
        "PAGEWALLANES": "0",
        "PAGEWAL": "junk",
    }
    assert WalConfig.from_env(env) == WalConfig()


# --------------------------------------------------------------------------- overrides and code


def test_keyword_overrides_win_over_the_environment() -> None:
    env = {"PAGEWAL_LANES": "4", "PAGEWAL_FSYNC": "normal", "PAGEWAL_MODE": "conservative"}
    config = WalConfig.from_env(env, lanes=8, fsync=FsyncMode.OFF)
    assert config.lanes == 8
    assert config.fsync is FsyncMode.OFF
    assert config.mode is Mode.CONSERVATIVE  # not overridden: the environment's value


def test_keyword_overrides_accept_mode_and_fsync_names_and_aliases() -> None:
    config = WalConfig.from_env({"PAGEWAL_MODE": "auto"}, mode="shadow", fsync="OFF")
    assert config.mode is Mode.SHADOW_COMPARE
    assert config.fsync is FsyncMode.OFF


def test_keyword_override_can_satisfy_a_constraint_the_environment_alone_breaks() -> None:
    env = {"PAGEWAL_MAX_BATCH_BYTES": "8MiB"}
    assert WalConfig.from_env(env, lane_capacity_bytes=8 * MIB).max_batch_bytes == 8 * MIB


@pytest.mark.parametrize("text", ["abc", "0", "1025"])
def test_a_bad_variable_is_rejected_even_when_an_override_replaces_it(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        WalConfig.from_env({"PAGEWAL_LANES": text}, lanes=4)
    assert info.value.variable == "PAGEWAL_LANES"
    assert info.value.value == text


@pytest.mark.parametrize(("variable", "text"), [
    ("PAGEWAL_LANES", "\u0663"),  # an Arabic-Indic digit three
    ("PAGEWAL_EPOCH_INTERVAL_MS", "1_0"),
    ("PAGEWAL_LANE_CAPACITY_BYTES", "6_5536"),
])
def test_only_ascii_decimal_numbers_are_accepted(variable: str, text: str) -> None:
    with pytest.raises(ConfigError):
        WalConfig.from_env({variable: text})


INVALID_IN_CODE = [
    ("mode", "fast"),
    ("mode", 3),
    ("lanes", 0),
    ("lanes", 1025),
    ("lanes", -1),
    ("lanes", True),
    ("lanes", 2.0),
    ("lanes", "4"),
    ("epoch_interval_ms", 0),
    ("epoch_interval_ms", -1.0),
    ("epoch_interval_ms", math.nan),
    ("epoch_interval_ms", math.inf),
    ("epoch_interval_ms", 60_001),
    ("epoch_interval_ms", True),
    ("epoch_interval_ms", "10"),
    ("lane_capacity_bytes", 4095),
    ("lane_capacity_bytes", (1 << 30) + 1),
    ("lane_capacity_bytes", "4MiB"),
    ("max_batch_bytes", 0),
    ("max_batch_bytes", 4 * MIB + 1),
    ("max_batch_bytes", 1.5),
    ("max_flush_delay_ms", 0),
    ("max_flush_delay_ms", math.nan),
    ("shadow_compare_per_mille", -1),
    ("shadow_compare_per_mille", 1001),
    ("fsync", "sometimes"),
    ("fsync", None),
    ("checkpoint_bytes", 0),
    ("checkpoint_bytes", (64 << 10) - 1),
    ("checkpoint_bytes", (1 << 40) + 1),
    ("checkpoint_bytes", "64MiB"),
    ("log_file_bytes", (64 << 10) - 4096),
    ("log_file_bytes", (64 << 10) + 1),
    ("inflight_epochs", 0),
    ("inflight_epochs", 65),
]


@pytest.mark.parametrize(("field", "value"), INVALID_IN_CODE)
def test_invalid_value_in_code_raises_config_error_naming_the_field(
    field: str, value: object
) -> None:
    with pytest.raises(ConfigError) as info:
        WalConfig(**{field: value})
    error = info.value
    assert isinstance(error, ValueError)
    assert error.variable == field
    assert str(error).startswith(f"{field}=")
    assert error.accepted in str(error)


@pytest.mark.parametrize(("field", "value"), INVALID_IN_CODE)
def test_invalid_keyword_override_names_the_field_not_the_variable(
    field: str, value: object
) -> None:
    variable = next(v for v, f in DESIGN_VARIABLES.items() if f == field)
    valid_env = {"PAGEWAL_LANES": "2", "PAGEWAL_FSYNC": "off", "PAGEWAL_MODE": "auto"}
    with pytest.raises(ConfigError) as info:
        WalConfig.from_env(valid_env, **{field: value})
    assert info.value.variable == field
    assert variable not in str(info.value)


def test_invalid_values_cover_every_field() -> None:
    assert {field for field, _ in INVALID_IN_CODE} == FIELDS


# --------------------------------------------------------------------------- immutability


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_config_is_frozen(field: str) -> None:
    config = WalConfig(lanes=2)
    before = getattr(config, field)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(config, field, before)
    with pytest.raises(AttributeError):
        config.__setattr__(field, None)
    assert getattr(config, field) == before


def test_an_invalid_config_cannot_be_derived_with_evolve() -> None:
    config = WalConfig(lanes=2)
    with pytest.raises(ConfigError) as info:
        attrs.evolve(config, lanes=0)
    assert info.value.variable == "lanes"
    assert attrs.evolve(config, lanes=3).lanes == 3
    assert config.lanes == 2


# --------------------------------------------------------------------------- config_sources


def test_config_sources_reports_env_variable_or_default_per_field() -> None:
    env = {"PAGEWAL_LANES": "4", "PAGEWAL_FSYNC": "off", "PATH": "/usr/bin"}
    sources = config_sources(env)
    assert set(sources) == FIELDS
    assert sources["lanes"] == "env PAGEWAL_LANES"
    assert sources["fsync"] == "env PAGEWAL_FSYNC"
    for field in FIELDS - {"lanes", "fsync"}:
        assert sources[field] == "default"


def test_config_sources_with_every_variable_set_reports_env_for_every_field() -> None:
    env = {variable: "x" for variable in DESIGN_VARIABLES}
    assert config_sources(env) == {
        field: f"env {variable}" for variable, field in DESIGN_VARIABLES.items()}


def test_config_sources_with_an_empty_environment_reports_only_defaults() -> None:
    assert config_sources({}) == dict.fromkeys(FIELDS, "default")


def test_config_sources_without_a_mapping_reads_os_environ(
    clean_environ: pytest.MonkeyPatch,
) -> None:
    clean_environ.setenv("PAGEWAL_EPOCH_INTERVAL_MS", "5")
    sources = config_sources()
    assert sources["epoch_interval_ms"] == "env PAGEWAL_EPOCH_INTERVAL_MS"
    assert sources["lanes"] == "default"

