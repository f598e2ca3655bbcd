"""What the `blipflow` command prints of Python logging: the project's own news, and from the libraries it
uses only their warnings and errors (their INFO lines, such as matplotlib's first-run "generated new
fontManager" or httpx's request lines, are not the user's business and would mix into the command's output)."""

from __future__ import annotations

import logging
import sys

# The project's packages (pyproject's): the library and the Prefect layer, whose serve says "serving ...".
OWN_LOGGERS = ("blipflow", "flows", "tasks", "blocks", "cli")


def show_own_messages_only() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
