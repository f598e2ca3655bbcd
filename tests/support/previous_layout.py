"""The delivery ledger and outbox as the DuckDB store kept them before the control plane (the previous
layout), written the way that code wrote them: the takeover tests build old stores with it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

import pyarrow as pa

from blipflow.model.ledger import WindowRecord
from blipflow.store.history import Store, incoming
from blipflow.store.statements import CANDIDATE_BLIP

DELIVERY_COLUMNS = {"agent": pa.string(), "blip_uri": pa.string(), "window_id": pa.string(), "skip_reason": pa.string()}
WINDOW_RECORD_FIELDS = "id, agent, state, size, created_at, attempts, failures, error, retry_at"


class PreviousLayoutLedger:
    def __init__(self, store: Store) -> None:
        self.store = store

    def decide(self, agent: str, skips: Mapping[str, str], window: list[str]) -> str | None:
        """Record skipped blips and, if `window` is not empty, open a pending window for it; one
        transaction, so a blip is never in two windows. Returns the window's id."""
        window_id = str(uuid.uuid4()) if window else None
        with self.store.transaction() as db:
            if skips:
                rows = [(agent, uri, None, reason) for uri, reason in skips.items()]
                with incoming(db, DELIVERY_COLUMNS, rows):
                    db.execute("INSERT INTO deliveries (agent, blip_uri, window_id, skip_reason) SELECT * FROM incoming")
            if window_id is not None:
                db.execute("INSERT INTO windows (id, agent, state, size) VALUES (?, ?, 'pending', ?)",
                           [window_id, agent, len(window)])
                with incoming(db, DELIVERY_COLUMNS, [(agent, uri, window_id, None) for uri in window]):
                    db.execute("INSERT INTO deliveries (agent, blip_uri, window_id, skip_reason) SELECT * FROM incoming")
            db.execute(
                f"""INSERT INTO agent_progress (agent, decided_through)
                    SELECT $agent, coalesce(
                        (SELECT min(b.seq) - 1 FROM blips b
                         WHERE b.seq > coalesce((SELECT decided_through FROM agent_progress WHERE agent = $agent), 0)
                           AND {CANDIDATE_BLIP}
                           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.agent = $agent AND d.blip_uri = b.uri)),
                        (SELECT max(seq) FROM blips), 0)
                    ON CONFLICT (agent) DO UPDATE SET decided_through = excluded.decided_through""",
                {"agent": agent},
            )
        return window_id

    def mark_sending(self, window_id: str) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE windows SET state = 'sending', sent_at = now() WHERE id = ?", [window_id])

    def finish_window(self, window_id: str, agent: str, replies: list[str], letta_ms: float) -> None:
        """The agent answered (or chose silence): its replies go to the outbox with the window's outcome."""
        with self.store.transaction() as db:
            for position, content in enumerate(replies):
                db.execute("INSERT INTO replies (id, window_id, agent, position, content) VALUES (?, ?, ?, ?, ?)",
                           [f"{window_id}:{position}", window_id, agent, position, content])
            db.execute("""UPDATE windows SET state = ?, finished_at = now(), letta_ms = ?, error = NULL,
                          attempts = attempts + 1, retry_at = NULL WHERE id = ?""",
                       ["answered" if replies else "silent", letta_ms, window_id])

    def fail_window(self, window_id: str, error: str, *, settled: bool, retry_at: datetime | None = None,
                    strike: bool = False) -> int:
        """A failed attempt: the window stays in the ledger to be sent again, not before `retry_at`. A
        `strike` is a failure of the window's own making; returns how many it has had."""
        with self.store.transaction() as db:
            return db.execute(
                """UPDATE windows SET state = 'failed', error = ?, settled = ?, retry_at = ?, attempts = attempts + 1,
                   failures = failures + 1, strikes = strikes + ? WHERE id = ? RETURNING strikes""",
                [error, settled, retry_at, int(strike), window_id],
            ).fetchone()[0]

    def window_records(self, states: list[str]) -> list[WindowRecord]:
        """The windows in `states`, oldest first, as a person reads them."""
        rows = self.store.query_all(
            f"""SELECT {WINDOW_RECORD_FIELDS} FROM windows WHERE state IN (SELECT unnest(?))
                ORDER BY created_at""", [states])
        return [WindowRecord(*row) for row in rows]

    def save_circuit(self, agent: str, state: str, failures: int, opened_at: datetime | None,
                     reason: str | None = None) -> None:
        with self.store.transaction() as db:
            db.execute(
                """INSERT INTO circuits (agent, state, failures, opened_at, reason) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (agent) DO UPDATE SET state = excluded.state, failures = excluded.failures,
                   opened_at = excluded.opened_at, reason = excluded.reason, updated_at = now()""",
                [agent, state, failures, opened_at, reason],
            )

    def record_post(self, reply_id: str, part: int, account: str, uri: str, cid: str, *, last: bool) -> None:
        """One part of a reply is on the PDS; after its last part the reply is posted."""
        with self.store.transaction() as db:
            db.execute("""INSERT INTO posts (reply_id, part, account, uri, cid) VALUES (?, ?, ?, ?, ?)
                          ON CONFLICT (reply_id, part) DO NOTHING""", [reply_id, part, account, uri, cid])
            if last:
                db.execute("UPDATE replies SET state = 'posted', error = NULL WHERE id = ?", [reply_id])
