"""The examples in client/ are real: config.toml parses as rshell reads it,
and its groups expand to the hosts its comments promise."""

from __future__ import annotations

from pathlib import Path

from rshell.client.config import load, resolve
from rshell.fleet.targets import expand

EXAMPLE = Path(__file__).resolve().parent.parent / "client" / "config.toml"


def test_example_config_parses_and_its_groups_expand() -> None:
    config = load(EXAMPLE)
    assert set(config.hosts) == {"web1", "web2", "legacy"}
    assert config.parallel == 64
    web = expand("@web", config.groups)
    assert web[:3] == ["web1", "web2", "web03"] and web[-1] == "web20" and len(web) == 20
    assert len(expand("@prod", config.groups)) == 23


def test_example_aliases_resolve_as_their_comments_say() -> None:
    config = load(EXAMPLE)
    assert resolve("web1", config).target == "10.0.0.5:7722"
    assert resolve("legacy", config).target == "ssh://deploy@192.0.2.9:2222"
    assert resolve("legacy", config).identity == str(Path("~/.ssh/id_ed25519").expanduser())
    assert resolve("web2", config).target == "web2.example.internal:7722"
