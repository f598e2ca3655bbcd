"""The one retry condition of every task that talks to a peer (Letta, a PDS)."""

from __future__ import annotations

from typing import Any

from blipflow.failures import Failure


def worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Timeouts, lost connections, 429 and 5xx are retried; refused credentials or requests are not."""
    try:
        state.result()
    except Failure as failure:
        return failure.transient
    except Exception:  # noqa: BLE001 - anything else (the store, say) may well pass on a second try
        return True
    return False
