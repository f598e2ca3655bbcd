"""The floor of a thread: the speakers granted it have `turn_timeout` seconds; one that stays silent
passes it to the next in the queue (with `sequential`, every turn passes it), and those next in line are
handed, when their turn comes, every blip that waited for them.

Pure operations on `Floor` values; `coordinate` decides what each hand-over means for the ledger.
"""

from __future__ import annotations

from blipflow.coordination.state import Floor


def opened(about: str, speakers: tuple[str, ...], queue: tuple[str, ...], *, every_turn: bool, now: float,
           turn_timeout: float) -> Floor | None:
    if not speakers and not queue:
        return None
    return Floor(about, {name: now + turn_timeout for name in speakers}, queue, every_turn,
                 {name: (about,) for name in queue})


def silent_speakers(floor: Floor, now: float) -> list[str]:
    return [name for name, until in floor.speakers.items() if until <= now]


def turns_ended(floor: Floor, agents: list[str], *, silent: bool) -> tuple[Floor, int]:
    """The floor without these speakers, and how many of those next in line take it: one per silent
    speaker, or per speaker at all with `every_turn`."""
    ended = [name for name in agents if name in floor.speakers]
    if not ended:
        return floor, 0
    speakers = {name: until for name, until in floor.speakers.items() if name not in ended}
    return floor.with_speakers(speakers), len(ended) if silent or floor.every_turn else 0


def carried(floor: Floor, uri: str, agents: list[str]) -> Floor:
    """Those next in line will also be handed this blip when their turn comes (it answers in their thread)."""
    waiting = dict(floor.waiting)
    for name in agents:
        waiting[name] = waiting.get(name, ()) + (uri,)
    return floor.with_line(floor.queue, waiting)


def next_in_line(floor: Floor) -> tuple[str, tuple[str, ...], Floor]:
    """The first in the queue, the blips that waited for it, and the floor without it in line."""
    name, queue = floor.queue[0], floor.queue[1:]
    waiting = dict(floor.waiting)
    uris = waiting.pop(name, ())
    return name, uris, floor.with_line(queue, waiting)


def granted(floor: Floor, name: str, now: float, turn_timeout: float) -> Floor:
    return floor.with_speakers({**floor.speakers, name: now + turn_timeout})


def done(floor: Floor) -> bool:
    """Nobody holds it and nobody will: silent speakers would pass it on, answering ones end it
    (except with `every_turn`, where the queue goes on)."""
    return not floor.speakers and (not floor.every_turn or not floor.queue)
