"""Strong references to records, as replies and the outbox hold them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ref:
    """A strong reference to a record: its at-uri and the cid of the version meant."""

    uri: str
    cid: str

    def as_record(self) -> dict[str, str]:
        return {"uri": self.uri, "cid": self.cid}


@dataclass(frozen=True)
class AnsweredBlip:
    """A blip a reply answers, with the root of the thread it belongs to (if it is a reply itself)."""

    uri: str
    cid: str
    root_uri: str | None = None
    root_cid: str | None = None

    @property
    def ref(self) -> Ref:
        return Ref(self.uri, self.cid)

    @property
    def thread_root(self) -> Ref:
        return Ref(self.root_uri, self.root_cid) if self.root_uri and self.root_cid else self.ref
