"""A policy from the config's `coordination:` section or a file of its own; a bad one is one line naming the field."""

import pytest

from blipflow.config import ConfigError, load_settings
from blipflow.model.coordination_policy import PolicyError, load_policy


def test_a_policy_by_name_or_from_a_file(tmp_path):
    assert load_policy("relevance").strategy == "relevance"
    whole = tmp_path / "policy.yaml"
    whole.write_text("strategy: round_robin\nk: 1\n")
    assert (load_policy(whole).strategy, load_policy(whole).k) == ("round_robin", 1)
    config = tmp_path / "config.yaml"
    config.write_text("agents: []\ncoordination: {strategy: random, seed: 4}\n")
    assert load_policy(config).seed == 4


@pytest.mark.parametrize("text, message", [
    ("strategy: loudest\n", "strategy: Input should be 'broadcast', 'round_robin', 'random', 'relevance', "
                            "'moderator' or 'sequential' (got 'loudest')"),
    ("k: 0\n", "k: Input should be greater than or equal to 1 (got 0)"),
    ("strategy: moderator\n", "coordination: Value error, strategy `moderator` needs `moderator`"),
    ("order: [ada, ada]\n", "order: Value error, names an agent more than once"),
    ("speakers: 3\n", "speakers: unknown setting"),
])
def test_a_bad_policy_is_one_line_naming_the_field(tmp_path, text, message):
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    with pytest.raises(PolicyError) as error:
        load_policy(policy)
    assert str(error.value).startswith(f"bad policy: {policy}: {message}")
    assert "\n" not in str(error.value)


def test_a_missing_file_says_what_else_it_could_be(tmp_path):
    with pytest.raises(PolicyError, match="or name a strategy: broadcast, round_robin"):
        load_policy(tmp_path / "nope.yaml")


def test_the_config_section_and_the_agents_skills(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("agents:\n  - {name: ada, agent_id: a1, skills: ['#Postgres', sql], tags: [Databases]}\n"
                      "coordination: {strategy: moderator, moderator: ada, termination_token: '<END>'}\n")
    settings = load_settings(config)
    assert settings.agents[0].skills == ["postgres", "sql"] and settings.agents[0].tags == ["databases"]
    assert (settings.coordination.strategy, settings.coordination.termination_token) == ("moderator", "<END>")


@pytest.mark.parametrize("section, message", [
    ("{strategy: moderator, moderator: bo}", "coordination.moderator: unknown agent 'bo'"),
    ("{strategy: sequential, order: [ada, cy]}", "coordination.order.1: unknown agent 'cy'"),
    ("{max_chain_depth: 0}", "coordination.max_chain_depth: Input should be greater than or equal to 1 (got 0)"),
])
def test_a_bad_coordination_section_is_one_line_naming_the_field(tmp_path, section, message):
    config = tmp_path / "config.yaml"
    config.write_text(f"agents:\n  - {{name: ada, agent_id: a1}}\ncoordination: {section}\n")
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    assert str(error.value) == f"bad config: {config}: {message}"


def test_a_skill_is_one_word(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("agents:\n  - {name: ada, agent_id: a1, skills: ['two words']}\n")
    with pytest.raises(ConfigError, match=r"agents.0.skills: Value error, each must be one word"):
        load_settings(config)
