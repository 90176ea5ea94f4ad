"""The installed distribution: the three packages and the two commands an operator relies on."""

from __future__ import annotations

from importlib.metadata import distribution, packages_distributions

DIST = "keepalived-arbiter"


def test_packages_belong_to_the_distribution() -> None:
    owners = packages_distributions()
    for package in ("arbiter", "fencers", "hooks"):
        assert DIST in owners.get(package, []), f"{package} is not installed from {DIST} (run `make install`)"


def test_console_scripts_are_declared() -> None:
    scripts = {ep.name: ep.value for ep in distribution(DIST).entry_points if ep.group == "console_scripts"}
    assert scripts["keepalived-arbiter"] == "arbiter.cli:main"
    assert scripts["keepalived-arbiter-notify"] == "hooks.notify:main"


def test_console_scripts_resolve_to_callables() -> None:
    for ep in distribution(DIST).entry_points:
        if ep.group == "console_scripts":
            assert callable(ep.load()), ep.name
