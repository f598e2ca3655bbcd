"""Moments as people type them on a command line (`--since`, `--until`): one reading for every command."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from blipflow.model.failures import BadRequest

AGE = re.compile(r"(\d+)\s*([mhdw])")
AGE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_moment(text: str, option: str, now: datetime) -> datetime:
    """A date, a time (UTC unless it says otherwise) or an age such as `36h` or `7d` (that long before now)."""
    value = text.strip()
    age = AGE.fullmatch(value)
    if age:
        return now - timedelta(**{AGE_UNITS[age.group(2)]: int(age.group(1))})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(
            f"bad {option}: {text!r} is not a date, a time or an age (e.g. 2025-10-09, 2025-10-09T08:00Z, 36h, 7d)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def moment_text(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
