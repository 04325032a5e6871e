"""Every `dockyard … --help` page renders (Rich markup in help texts once crashed `dockyard serve --help`)."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from dockyard.cli import app


def _command_paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    if hasattr(command, "commands"):  # a group (Typer's click may not be the `click` installed beside it)
        for name, sub in sorted(command.commands.items()):
            paths.extend(_command_paths(sub, (*prefix, name)))
    return paths


PATHS = _command_paths(typer.main.get_command(app))


def test_the_command_tree_is_discovered() -> None:
    assert {("serve",), ("admin", "rotate-master-key"), ("gc",), ("admin", "usage", "report")} <= set(PATHS)


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(path) or "dockyard")
def test_help_renders(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
