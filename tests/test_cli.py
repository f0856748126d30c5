"""The CLI: every command and group has help text; --version works."""

from __future__ import annotations

import typer
from typer.main import get_command
from typer.testing import CliRunner

from survey import __version__
from survey.cli import app

runner = CliRunner()


def _walk(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, path + (name,))


def test_every_command_has_help():
    root = get_command(app)
    seen = []
    for path, command in _walk(root):
        assert (command.help or "").strip(), f"`survey {' '.join(path)}` has no help text"
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        seen.append(" ".join(path))
    assert {"datasets list", "datasets show", "physics show", "zoo list", "run", "status"} <= set(seen)


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_no_args_shows_usage():
    result = runner.invoke(app, [])
    assert "Usage" in result.output
    assert isinstance(app, typer.Typer)
