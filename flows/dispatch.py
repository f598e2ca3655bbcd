"""The dispatch flow: sends each configured Letta agent its windows of new blips, as they become ready.

Long-running, like ingest: it looks for new blips every `dispatch.poll_interval` seconds, so a blip
reaches its agents well under a second after it is stored, instead of waiting for a schedule.
"""

from __future__ import annotations

import threading

from prefect import flow, get_run_logger

from blipflow.accounts import with_learned_dids
from blipflow.config import Settings, load_settings
from blipflow.dispatch import Dispatcher
from blipflow.identity import IdentityResolver
from blipflow.letta import LettaGateway
from blipflow.shutdown import stop_on_signals
from blipflow.store import Store
from tasks.dispatch import deliver_window


def build_dispatcher(settings: Settings) -> Dispatcher:
    store = Store.from_config(settings.store)
    resolver = IdentityResolver.from_settings(store, settings)
    gateway = LettaGateway(settings.letta, max_steps=settings.dispatch.max_steps)
    # Agents' DIDs keep their own blips from them and measure agent-only chains; learned from handles if not given.
    agents = with_learned_dids(settings.agents, settings.bluesky, timeout=settings.publish.timeout)
    return Dispatcher(store, gateway, resolver, agents, settings.dispatch, letta_timeout=settings.letta.timeout)


@flow(name="dispatch")
def dispatch(config_file: str | None = None, rounds: int | None = None, until_idle: bool = False) -> int:
    """Deliver windows until cancelled (or for `rounds` planning rounds, or, with `until_idle`, until
    nothing is left to send); returns how many windows were delivered.

    Agents are served side by side, each one window a round, so an agent reads its windows in order."""
    settings = load_settings(config_file)
    logger = get_run_logger()
    if not settings.agents:
        logger.warning("no agents configured: nothing to dispatch")
        return 0
    dispatcher = build_dispatcher(settings)
    delivered = 0
    done_rounds = 0
    stopping = threading.Event()
    with stop_on_signals(stopping.set):  # finish the window in hand, then stop
        while not stopping.is_set() and (rounds is None or done_rounds < rounds):
            done_rounds += 1
            windows = dispatcher.plan()
            running = [deliver_window.submit(dispatcher, window) for window in windows]
            for future in running:
                future.wait()
                if future.state.is_completed():
                    delivered += future.result().outcome != "in_flight"
                else:
                    logger.error("%s", future.state.message)
            if not windows:
                if until_idle:
                    break
                stopping.wait(settings.dispatch.poll_interval)
    logger.info("dispatch stopped after delivering %d windows", delivered)
    return delivered
