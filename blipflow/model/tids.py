"""ATProto timestamp identifiers (TIDs): record keys that sort in time order."""

from __future__ import annotations

# The TID alphabet (base32-sortable): keys sort in time order, as record keys of the PDS's own do.
TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"


def tid(micros: int, clock_id: int) -> str:
    """A timestamp identifier: 53 bits of microseconds since the epoch, 10 bits of clock id, 13 characters."""
    if not 0 <= micros < 1 << 53 or not 0 <= clock_id < 1 << 10:
        raise ValueError(f"no TID for {micros} µs and clock id {clock_id}")
    value = micros << 10 | clock_id
    return "".join(TID_ALPHABET[value >> shift & 31] for shift in range(60, -5, -5))
