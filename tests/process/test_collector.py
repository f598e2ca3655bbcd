"""What ingest's long run keeps out of the cyclic garbage collector's passes."""

from __future__ import annotations

import gc

from blipflow.process.collector import collector_spares_what_is_already_there


def test_objects_from_before_are_spared_until_the_end_and_cycles_made_meanwhile_are_collected() -> None:
    class Cycle:
        pass

    before = Cycle()
    with collector_spares_what_is_already_there():
        assert gc.get_freeze_count() > 0  # what existed, `before` among it, is out of the collector's passes
        made = Cycle()
        made.itself = made
        del made
        assert gc.collect() > 0  # a cycle made meanwhile is still collected
    assert gc.get_freeze_count() == 0
    assert before is not None
