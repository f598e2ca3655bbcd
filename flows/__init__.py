"""Prefect flows: orchestration only; the work is done by the `blipflow` library.

The library logs through the standard `blipflow` logger; Prefect forwards it to the run's logs
(PREFECT_LOGGING_EXTRA_LOGGERS=blipflow) but would leave it at Python's default WARNING level.

The settings every flow loads may name Prefect blocks instead of holding secrets (blipflow.config): the
flows load them with `blocks.loading.settings_from`, which reads those blocks.
"""

import logging

logging.getLogger("blipflow").setLevel(logging.INFO)
