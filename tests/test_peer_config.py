"""The peer's YAML config file and the supervisor's restart delays (pure)."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from peer.config import parse_config, render_config
from peer.supervise import FIRST_DELAY, HEALTHY_AFTER, MAX_DELAY, next_delay


def test_render_then_parse_round_trips() -> None:
    values = {
        "seeder": "10.0.0.1:7700",
        "data_dir": "/var/lib/shoal-peer",
        "name": "web-1",
        "bind": "10.0.0.23",
        "labels": {"env": "prod", "rack": "012"},
        "keep": 3,
    }
    text = render_config(values)
    assert parse_config(text, "peer.yml").values == values
    assert render_config(dict(reversed(values.items()))) == text  # same values, same bytes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seeder: a:1\n", "data_dir is required"),
        ("seeder: a:1\ndata_dir: /d\nseedr: x\n", "unknown key 'seedr'"),
        ("seeder: a:1\ndata_dir: /d\nkeep: many\n", "keep: 'many' has the wrong type"),
        ("seeder: a:1\ndata_dir: /d\nkeep: true\n", "keep: True has the wrong type"),
        ("- a\n", "must be a mapping"),
        ("seeder: [\n", "invalid YAML"),
    ],
)
def test_bad_config_is_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(text, "/etc/shoal/peer.yml")
    assert "/etc/shoal/peer.yml" in str(info.value)


def test_restart_delay_doubles_then_resets_after_a_healthy_run() -> None:
    delay = None
    seen = []
    for _ in range(8):
        delay = next_delay(delay, ran_for=0.5)
        seen.append(delay)
    assert seen[:3] == [FIRST_DELAY, 2 * FIRST_DELAY, 4 * FIRST_DELAY]
    assert seen[-1] == MAX_DELAY
    assert next_delay(MAX_DELAY, ran_for=HEALTHY_AFTER) == FIRST_DELAY
