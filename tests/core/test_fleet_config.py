"""The fleet's configuration (vastops/fleet.py): VAST_INSTANCE_ID, VAST_INSTANCE_IDS, the fleet file;
each member's own settings; every mistake one line naming the file, the instance and the key."""

from __future__ import annotations

import pytest

from vastops.config import ConfigError, load_settings
from vastops.fleet import load_fleet


def settings(tmp_path, text: str | None = None, **values):
    if text is not None:
        path = tmp_path / "fleet.toml"
        path.write_text(text, encoding="utf-8")
        values["vastops_fleet_file"] = path
    return load_settings(None, vastops_db=tmp_path / "ledger.db", **values)


FILE = """
default = "embed"
[budget]
daily_usd = 40
[instances.chat]
id = 12345
models = ["chat-model"]
idle_minutes = 30
health_port = 9001
[instances.embed]
id = 23456
models = ["embed-model"]
idle_minutes = 10
budget_daily_usd = 5
daily_stop_at = "18:00"
"""


def test_one_instance_is_a_fleet_of_one_with_the_global_settings(tmp_path):
    fleet = load_fleet(settings(tmp_path, vast_instance_id=7, vast_auto_shutdown_minutes=12))
    assert not fleet.is_fleet and fleet.ids == (7,) and fleet.default is fleet.members[0]
    assert fleet.default.name == "7" and fleet.default.settings.vast_auto_shutdown_minutes == 12
    assert load_fleet(settings(tmp_path)).members == () and load_fleet(settings(tmp_path)).default is None


def test_the_file_names_instances_and_overrides_what_differs(tmp_path):
    fleet = load_fleet(settings(tmp_path, FILE, vast_instance_ids="999,12345", vast_auto_shutdown_minutes=45))
    assert [m.label for m in fleet.members] == ["999", "chat (12345)", "embed (23456)"]
    plain, chat, embed = fleet.members
    assert plain.settings.vast_auto_shutdown_minutes == 45 and plain.models == ()
    assert chat.settings.vast_auto_shutdown_minutes == 30 and chat.settings.vast_health_port == 9001
    assert embed.settings.vast_budget_daily_usd == 5 and str(embed.settings.vast_daily_stop_at) == "18:00:00"
    assert [m.settings.vast_instance_id for m in fleet.members] == [999, 12345, 23456]
    assert fleet.default is embed and fleet.budget_daily_usd == 40
    assert fleet.find("chat") is chat and fleet.find("23456") is embed and fleet.serving("embed-model") is embed
    assert fleet.pick(None) is embed


def test_the_default_may_come_from_the_environment_and_the_budget_too(tmp_path):
    fleet = load_fleet(settings(tmp_path, vast_instance_ids="1,2,3", vast_default_instance="2", vastops_fleet_budget_monthly_usd=100))
    assert fleet.default.instance_id == 2 and fleet.budget_monthly_usd == 100 and fleet.budgeted


@pytest.mark.parametrize(
    "text, words",
    [
        ("[instances.chat]\nid = 1\nidle_minute = 3\n", ["fleet.toml: [instances.chat]", "unknown key 'idle_minute'", "idle_minutes"]),
        ("[instances.a]\nid = 1\n[instances.b]\nid = 1\n", ["[instances.b]", "instance 1 is listed twice", "[instances.a]"]),
        ("[instances.a]\nid = 1\nidle_minutes = -3\n", ["[instances.a]", "idle_minutes: expected a number greater than 0"]),
        ("[instances.a]\nid = 'x'\n", ["[instances.a]", "id: expected the numeric vast.ai instance id"]),
        ("[instances.9a]\nid = 1\n", ["[instances.9a]", "starts with a letter"]),
        ('default = "b"\n[instances.a]\nid = 1\n', ["names no instance", "'b'", "a (1)"]),
        ("[budget]\nweekly_usd = 3\n", ["[budget]", "unknown key 'weekly_usd'"]),
        ("color = 1\n", ["unknown key 'color'"]),
        (
            "[instances.a]\nid = 1\nmodels = ['m']\n[instances.b]\nid = 2\nmodels = ['m']\n",
            ["[instances.b]", "'m' is served by [instances.a]"],
        ),
        ("[instances.a\nid = 1\n", ["is not valid TOML"]),
        ("[instances.a]\nid = 1\nhealth_token = 'with space'\n", ["health_token: expected printable ASCII"]),
    ],
)
def test_a_mistake_is_one_line_naming_the_file_the_instance_and_the_key(tmp_path, text, words):
    with pytest.raises(ConfigError) as caught:
        load_fleet(settings(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert "with space" not in message  # a secret's value is never shown


def test_an_instance_listed_twice_in_the_environment_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"VAST_INSTANCE_IDS.*listed twice"):
        settings(tmp_path, vast_instance_ids="1,2,1")
    with pytest.raises(ConfigError, match="instance 5 is listed twice"):
        load_fleet(settings(tmp_path, vast_instance_id=5, vast_instance_ids="4,5"))


def test_an_unknown_instance_names_the_known_ones(tmp_path):
    fleet = load_fleet(settings(tmp_path, FILE))
    with pytest.raises(ConfigError, match=r"no instance 'gpu9' in the fleet \(known: chat \(12345\), embed \(23456\)\)"):
        fleet.find("gpu9")
