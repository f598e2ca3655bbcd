"""A reply waiting in the outbox, as publish posts it."""

from __future__ import annotations

from dataclasses import dataclass

from blipflow.model.refs import AnsweredBlip, Ref


@dataclass(frozen=True)
class OutgoingReply:
    """A reply as publish posts it, whichever store's outbox it was read from."""

    id: str
    agent: str
    position: int
    content: str
    created_us: int  # when dispatch queued it, in µs: the time its record keys are made of
    state: str  # queued | posted | failed
    answers: tuple[AnsweredBlip, ...]  # the window's blips, oldest first
    posted: tuple[Ref, ...]  # the parts already on the PDS, in order

    @classmethod
    def from_row(cls, row: tuple) -> OutgoingReply:
        id_, agent, position, content, created_us, state, answers, posted = row
        return cls(id_, agent, position, content, created_us, state,
                   tuple(AnsweredBlip(**blip) for blip in answers), tuple(Ref(**part) for part in posted))
