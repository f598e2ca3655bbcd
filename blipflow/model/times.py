"""The time text of ATProto records."""

from __future__ import annotations

from datetime import datetime, timezone


def iso_time(micros: int) -> str:
    """The record time format ATProto uses: UTC, milliseconds, 'Z'."""
    moment = datetime.fromtimestamp(micros / 1_000_000, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
