"""A generated chat history to price policies on: agents with distinct skills, people asking, threads.

People post when they do (Poisson arrivals), a share of them start threads, the rest answer in recent
ones; a post mentions an agent, asks about a skill (in words or as a #tag), or just chats. The agents'
replies are recorded as a lively all-to-all chat would have them: mentioned and skilled agents mostly
answer, others now and then, and agents answer each other in chains that go deeper than a policy should
let them. Seeded: the same arguments, the same history. Used by bench/policy.py and the tests.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from blipflow.coordination.facts import BlipFacts, record_facts
from blipflow.coordination.participants import Participant, Roster

SKILLS = ("postgres", "rust", "python", "kubernetes", "typescript", "security", "statistics", "music", "cooking",
          "chess", "astronomy", "law", "biology", "finance", "poetry", "history", "linux", "networking", "design",
          "gardening", "physics", "ethics", "economics", "geology")
CHATTER = ("good morning everyone", "what a day", "anyone around?", "this stream is lively today",
           "just saying hi", "lol", "interesting thread", "thanks all")
START = 1_760_000_000.0


@dataclass(frozen=True)
class History:
    roster: Roster
    blips: list[BlipFacts]  # in time order


def generated_history(*, agents: int = 20, human_blips: int = 2000, people: int = 40, seed: int = 12,
                      mean_gap: float = 45.0) -> History:
    if agents > len(SKILLS):
        raise ValueError(f"at most {len(SKILLS)} agents with distinct skills")
    rng = random.Random(seed)
    roster = Roster.of(
        Participant(f"agent{n:02d}", f"did:plc:agent{n:02d}", f"agent{n:02d}.test", frozenset({SKILLS[n]}))
        for n in range(agents)
    )
    records: list[tuple[float, str, str, dict]] = []  # (at, uri, did, record)
    threads: list[list[tuple[str, str]]] = []  # per thread: (uri, author did) of its blips
    counter = iter(range(10**9))
    now = START

    def post(at: float, did: str, content: str, parent: str | None, root: str | None, facets: list) -> str:
        uri = f"at://{did}/stream.thought.blip/{next(counter):08d}"
        record: dict = {"content": content, "createdAt": ""}
        if parent is not None:
            record["reply"] = {"root": {"uri": root, "cid": "c"}, "parent": {"uri": parent, "cid": "c"}}
        if facets:
            record["facets"] = facets
        records.append((at, uri, did, record))
        return uri

    for _ in range(human_blips):
        now += rng.expovariate(1 / mean_gap)
        person = f"did:plc:person{rng.randrange(people):02d}"
        mentioned = [rng.randrange(agents) for _ in range(rng.choice((1, 1, 1, 2)))] if rng.random() < 0.2 else []
        skill = rng.randrange(agents) if rng.random() < 0.4 else None
        words, facets = [], []
        for n in mentioned:
            if rng.random() < 0.5:
                words.append(f"@agent{n:02d}.test")
            else:  # a client that writes facets
                words.append("hey you")
                facets.append({"features": [{"$type": "app.bsky.richtext.facet#mention", "did": f"did:plc:agent{n:02d}"}]})
        if skill is not None:
            words.append(f"how would you approach #{SKILLS[skill]} here?" if rng.random() < 0.5
                         else f"any advice on {SKILLS[skill]} for a beginner?")
        if not words:
            words.append(rng.choice(CHATTER))
        if threads and rng.random() < 0.5:
            thread = threads[-1 - min(len(threads) - 1, int(rng.expovariate(1 / 4)))]
            parent, _ = rng.choice(thread)
            root = thread[0][0]
        else:
            thread, parent, root = [], None, None
            threads.append(thread)
        uri = post(now, person, " ".join(words), parent, root, facets)
        root = root or uri
        thread.append((uri, person))
        parent_agent = parent.split("/")[2] if parent else None
        answering = set(mentioned) | ({skill} if skill is not None else set())
        answering |= {n for n in range(agents) if f"did:plc:agent{n:02d}" == parent_agent}
        repliers = [n for n in range(agents) if (n in answering and rng.random() < 0.9) or rng.random() < 0.03]
        for n in repliers:
            agent_replies(rng, post, thread, root, uri, n, now + rng.uniform(5, 30), agents, 0)
    blips: list[BlipFacts] = []
    facts_depth: dict[str, int] = {}
    for at, uri, did, record in sorted(records, key=lambda item: item[0]):
        parent = record.get("reply", {}).get("parent", {}).get("uri")
        facts = record_facts(uri, did, record, at=at, roster=roster, parent_depth=facts_depth.get(parent))
        facts_depth[uri] = facts.chain_depth
        blips.append(facts)
    return History(roster, blips)


def agent_replies(rng: random.Random, post: Callable[..., str], thread: list[tuple[str, str]], root: str, parent: str,
                  agent: int, at: float, agents: int, chain: int) -> None:
    """One agent's recorded reply, and, now and then, another agent answering it, and so on (up to 6 deep)."""
    other = rng.randrange(agents)
    asks = other != agent and rng.random() < 0.3
    content = f"here is my take ({SKILLS[agent]})" + (f" — @agent{other:02d}.test what do you think?" if asks else "")
    did = f"did:plc:agent{agent:02d}"
    uri = post(at, did, content, parent, root, [])
    thread.append((uri, did))
    if chain < 5 and (asks and rng.random() < 0.8 or rng.random() < 0.1):
        answerer = other if asks else rng.choice([n for n in range(agents) if n != agent])
        agent_replies(rng, post, thread, root, uri, answerer, at + rng.uniform(5, 30), agents, chain + 1)
