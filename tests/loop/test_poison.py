"""A record nobody can read a date from, on real peers: a blip whose `createdAt` is a year Python cannot
hold ("99999-01-01T00:00:00Z", which the PDS accepts) is stored without a date, and the agent goes on —
the normal blip after it is answered on the PDS, and `blipflow history` shows both."""

from __future__ import annotations

import subprocess
import sys

from tests.support.agent_accounts import agent_account
from tests.support.chat_loop import no_secrets_in, records
from tests.support.ingest_process import PROJECT_ROOT, wait_for

POISON_DATE = "99999-01-01T00:00:00Z"


def test_a_blip_dated_beyond_year_9999_is_stored_undated_and_the_agent_answers_the_next_one(
        make_loop, atproto_network, human_account, letta_server):  # noqa: F811 - the fixture imported above
    scout = agent_account(atproto_network, "scout")
    loop = make_loop(scout.config("scout", letta_server.create_agent("letta_v1_agent"))).start()

    poison, _ = atproto_network.post_blip(human_account, "Greetings from the far future.", createdAt=POISON_DATE)
    question, question_cid = atproto_network.post_blip(human_account, "Still there? [[reply:Still here.]]")

    def answer_to_question():
        return [r for r in records(scout) if r.value["reply"]["parent"]["uri"] == question]

    [answer] = wait_for(answer_to_question, 90, "the agent's answer to the blip after the poison one", 0.5)
    assert answer.value["content"] == "Still here."
    assert answer.value["reply"]["root"] == {"uri": question, "cid": question_cid}
    assert loop.store.query_all("SELECT uri, created_at FROM blips WHERE uri = ?", [poison]) == [(poison, None)]
    assert loop.rows("SELECT count(*) FROM windows WHERE state NOT IN ('answered', 'silent')") == [(0,)]

    shown = subprocess.run([sys.executable, "-m", "cli", "-c", str(loop.config), "history"], cwd=PROJECT_ROOT,
                           env=loop.env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "Greetings from the far future." in shown.stdout and "Still there?" in shown.stdout
    assert "Traceback" not in shown.stdout + shown.stderr
    no_secrets_in(loop, scout)
