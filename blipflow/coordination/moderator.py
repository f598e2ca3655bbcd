"""The moderator's answer, validated: the names it gives are only taken when they are eligible speakers.

The answer is an input (dispatch asks the moderator agent; replay reads what it answered): None when it
did not answer in time. Unknown or ineligible names are dropped, never handed on, and an answer that
leaves nobody sends the choice to `relevance`, with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from blipflow.coordination.participants import Roster


@dataclass(frozen=True, slots=True)
class ModeratorVerdict:
    speakers: tuple[str, ...]  # eligible names, in the moderator's order, each once
    note: str  # what was dropped, or why nothing is left


def validate(answer: Sequence[str] | None, candidates: Sequence[str], roster: Roster) -> ModeratorVerdict:
    if answer is None:
        return ModeratorVerdict((), "the moderator did not answer in time")
    if isinstance(answer, str) or not all(isinstance(name, str) for name in answer):
        return ModeratorVerdict((), "the moderator's answer is not a list of names")
    eligible = set(candidates)
    speakers = tuple(dict.fromkeys(name for name in answer if name in eligible))
    unknown = [name for name in answer if name not in roster.by_name]
    ineligible = [name for name in answer if name in roster.by_name and name not in eligible]
    notes = []
    if unknown:
        notes.append(f"unknown agents dropped: {', '.join(map(repr, unknown[:5]))}")
    if ineligible:
        notes.append(f"not eligible now: {', '.join(ineligible[:5])}")
    if not speakers:
        notes.append("the moderator named nobody eligible" if answer else "the moderator named nobody")
    return ModeratorVerdict(speakers, "; ".join(notes))
