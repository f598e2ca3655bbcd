"""Blocking calls an asyncio program awaits without being held up by them when it stops.

`asyncio.to_thread` runs a call on the loop's default executor, and both `asyncio.run` (which, on Python
3.11, waits for that executor's threads with no timeout) and the interpreter's exit (which joins every
executor thread) wait for the call to return. A call that hangs on a peer (a directory that answers a
byte at a time, a store another process keeps locked) then keeps a stopped program alive. `detached`
runs the call on a daemon thread instead, which neither waits for: stopping abandons the call.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

Result = TypeVar("Result")


async def detached(call: Callable[..., Result], *args: Any) -> Result:
    """`call(*args)` on a thread of its own, like `asyncio.to_thread` (context variables included), except
    that nothing waits for the thread once the awaiting task is cancelled or the loop is gone. Only for
    calls whose effects may be lost half-way: on exit the thread is simply dropped."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[Result] = loop.create_future()
    context = contextvars.copy_context()

    def settle(settler: Callable[[Any], None], value: Any) -> None:
        def on_loop() -> None:
            if not outcome.done():  # not cancelled meanwhile
                settler(value)
        try:
            loop.call_soon_threadsafe(on_loop)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def work() -> None:
        try:
            value = context.run(call, *args)
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting task, whatever it is
            settle(outcome.set_exception, error)
        else:
            settle(outcome.set_result, value)

    threading.Thread(target=work, name=f"blipflow-detached-{getattr(call, '__name__', 'call')}", daemon=True).start()
    return await outcome
