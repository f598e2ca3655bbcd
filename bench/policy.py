"""The price of each speaker-selection strategy, on a generated history, through the replay (no Letta).

20 agents with distinct skills and 2,000 people's blips (mentions, skill questions as words or #tags,
chatter; new threads and answers in recent ones) with the agents' replies recorded as an all-to-all chat
would have them (blipflow.coordination.synthetic_history). Each strategy but `moderator` (whose answers
come from a Letta agent) is replayed with the same policy otherwise (k=2, chain bound 3, 12 agent turns per thread). Calls per human
blip count every (agent, blip) handed over — those triggered by the agents' recorded replies included —
÷ people's blips. Targets, checked in this run: broadcast ≥ 20 calls per human blip (the baseline);
relevance ≤ 2.0 with addressed recall 1.0 and its longest agent-only chain within the bound; the whole
replay ≤ 10 s. Last line: one JSON object.

    python bench/policy.py [--agents 20] [--human-blips 2000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blipflow.coordination.replay import replay  # noqa: E402
from blipflow.coordination.synthetic_history import generated_history  # noqa: E402
from blipflow.model.coordination_policy import STRATEGY_NAMES, CoordinationPolicy  # noqa: E402

REPLAYED = [name for name in STRATEGY_NAMES if name != "moderator"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--human-blips", type=int, default=2000)
    parser.add_argument("--profile", action="store_true", help="print where the replay spends its time")
    args = parser.parse_args()

    history = generated_history(agents=args.agents, human_blips=args.human_blips)
    policies = {name: CoordinationPolicy(strategy=name, k=2, max_chain_depth=3, max_agent_turns=12) for name in REPLAYED}
    profiler = cProfile.Profile() if args.profile else None
    reports, seconds, cpu_seconds = {}, {}, {}
    for name, policy in policies.items():
        if profiler:
            profiler.enable()
        started, cpu_started = time.perf_counter(), time.process_time()
        reports[name] = replay(history.blips, history.roster, policy)
        seconds[name] = time.perf_counter() - started
        cpu_seconds[name] = time.process_time() - cpu_started
        if profiler:
            profiler.disable()
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(20)
    for name, report in reports.items():
        print(f"{name:12} {seconds[name]:5.2f} s ({cpu_seconds[name]:4.2f} s cpu)  calls {report.calls:6}  replies kept {report.replies_kept}/"
              f"{report.recorded_replies}  threads closed {report.threads_closed}  {report.summary()}")
    broadcast, relevance = reports["broadcast"].summary(), reports["relevance"].summary()
    replay_s = sum(seconds.values())
    targets = {
        "broadcast >= 20 calls per human blip": broadcast["calls_per_human_blip"] >= 20,
        "relevance <= 2.0 calls per human blip": relevance["calls_per_human_blip"] <= 2.0,
        "relevance addressed recall 1.0": relevance["addressed_recall"] == 1.0,
        "relevance chain within its bound": relevance["max_chain"] <= policies["relevance"].max_chain_depth,
        f"whole replay <= 10 s (wall; {sum(cpu_seconds.values()):.2f} s of cpu on a shared machine)": replay_s <= 10.0,
    }
    for target, met in targets.items():
        print(f"{'met' if met else 'MISSED':6} {target}")
    print(json.dumps({"bench": "policy", "agents": args.agents, "human_blips": reports["broadcast"].human_blips,
                      "replay_s": round(replay_s, 2),
                      "strategies": {name: report.summary() for name, report in reports.items()}}, separators=(",", ":")))


if __name__ == "__main__":
    main()
