"""Time, one way: aware UTC datetimes inside, one canonical text form in the state and in queries.

PostHog writes datetimes several ways (``Z``, ``+HH:MM``, naive UTC, ClickHouse's space separator);
``parse_ts`` reads all of them. ``fmt_ts`` is the canonical form (sortable as text) the state keeps.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


_CANONICAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z").fullmatch


def parse_ts(value: Any) -> datetime:
    """A timestamp as PostHog or the sandbox returns it (ISO 8601, 'Z' or offset or naive UTC,
    'T' or space) as an aware UTC datetime."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, (int, float)):
        dt = datetime.fromtimestamp(value, UTC)
    else:
        try:  # Python 3.11 reads 'Z', offsets and a space separator itself: the common case
            dt = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            text = str(value).strip().replace(" ", "T", 1)
            if text.endswith(("Z", "z")):
                text = text[:-1] + "+00:00"
            dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def fmt_ts(dt: datetime) -> str:
    """Canonical, lexicographically sortable UTC form: 2024-04-03T10:11:12.123456Z."""
    return dt.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def norm_ts(value: Any) -> str:
    """``fmt_ts(parse_ts(value))``; a value already in the canonical form (what PostHog sends for
    nearly every event) is only checked, not rebuilt."""
    if type(value) is str and _CANONICAL(value):
        datetime.fromisoformat(value)  # a real date and time, or ValueError like the slow path
        return value
    return fmt_ts(parse_ts(value))


_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()


def ts_ms(value: Any) -> int:
    """Unix milliseconds, exact (integer arithmetic, no float rounding; floor, like the server)."""
    dt = parse_ts(value)
    return ((dt.toordinal() - _EPOCH_ORDINAL) * 86_400_000 + dt.hour * 3_600_000 + dt.minute * 60_000
            + dt.second * 1000 + dt.microsecond // 1000)


def parse_datetime(text: Any) -> datetime:
    """A datetime PostHog wrote as JSON text (``parse_ts`` for strings only); ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"not a datetime string: {text!r}")
    return parse_ts(text)


def parse_optional_datetime(value: Any) -> datetime | None:
    """``parse_datetime``, or None for a missing, empty or unreadable value."""
    if value in (None, ""):
        return None
    try:
        return parse_datetime(value)
    except ValueError:
        return None
