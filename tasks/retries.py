"""The one retry condition of every task that talks to a peer (Letta, a PDS)."""

from __future__ import annotations

from typing import Any

from blipflow.model.failures import Failure


def worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Timeouts, lost connections, 429 and 5xx are retried, and so is a window that failed for a reason
    of its own (until it is quarantined); refused credentials or requests are not, nor is a failure after
    which the agent's circuit is open (its failure says so: not transient)."""
    try:
        state.result()
    except Failure as failure:
        return failure.transient
    except Exception:  # noqa: BLE001 - anything else (the store, say) may well pass on a second try
        return True
    return False
