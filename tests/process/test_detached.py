from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from blipflow.process.detached import detached
from tests.support.ingest_process import PROJECT_ROOT

asking = contextvars.ContextVar("asking", default="nobody")


def test_a_detached_call_answers_like_a_thread_call():
    async def main() -> tuple[int, str]:
        asking.set("the monitor")
        return await detached(lambda a, b: a + b, 2, 3), await detached(asking.get)

    assert asyncio.run(main()) == (5, "the monitor")


def test_a_detached_call_raises_what_the_call_raised():
    def fails() -> None:
        raise LookupError("no such author")

    with pytest.raises(LookupError, match="no such author"):
        asyncio.run(detached(fails))


def test_a_cancelled_wait_leaves_the_call_running_and_the_loop_free():
    release = threading.Event()
    finished = threading.Event()

    def hangs() -> None:
        release.wait()
        finished.set()

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(detached(hangs), 0.1)

    started = time.monotonic()
    asyncio.run(main())  # asyncio.to_thread would keep this waiting on the executor thread
    assert time.monotonic() - started < 2
    release.set()  # the call still finishes, its answer going nowhere (the loop is closed)
    assert finished.wait(5)


@pytest.mark.process
def test_a_process_exits_with_a_detached_call_still_hanging():
    program = textwrap.dedent("""
        import asyncio, threading
        from blipflow.process.detached import detached

        async def main():
            try:
                await asyncio.wait_for(detached(threading.Event().wait), 0.1)
            except TimeoutError:
                print("gave up waiting", flush=True)

        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", program], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "gave up waiting\n"
    assert done.stderr == ""
