"""The control plane as every flow opens it: a store of the previous layout is taken over the first time."""

from __future__ import annotations

import logging
from logging import Logger, LoggerAdapter

from blipflow.config import Settings
from blipflow.control.engine import ControlPlane
from blipflow.operations.takeover import take_over

log = logging.getLogger(__name__)


def control_plane(settings: Settings, logger: Logger | LoggerAdapter = log) -> ControlPlane:
    plane = ControlPlane.from_settings(settings)
    taken = take_over(plane, settings.store)  # does nothing once done, or for a store of this layout
    if not taken.already and taken.windows + taken.replies:
        logger.info("took over %d windows and %d replies from %s", taken.windows, taken.replies, taken.store)
    return plane
