"""The CLI: every command and group has help text with an example; --version works; one error path."""

from __future__ import annotations

from typer.main import get_command
from typer.testing import CliRunner

from survey import __version__
from survey.cli import app

runner = CliRunner()


def _walk(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, path + (name,))


def test_every_command_has_help_with_an_example():
    root = get_command(app)
    seen = []
    for path, command in _walk(root):
        assert (command.help or "").strip(), f"`survey {' '.join(path)}` has no help text"
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        example = f"Example: survey {' '.join(path)}".rstrip()
        assert example in result.output, f"`survey {' '.join(path)} --help` shows no example ({example!r})"
        seen.append(" ".join(path))
    assert {"datasets list", "datasets show", "physics show", "zoo list", "zoo eval", "run", "status", "forget",
            "query", "estimate", "report", "demo"} <= set(seen)


def test_every_command_shares_one_store_option():
    from survey.cli.common import StoreOption

    commands = dict(_walk(get_command(app)))
    stores = {path: next(p for p in cmd.params if p.name == "store")
              for path, cmd in commands.items() if any(p.name == "store" for p in cmd.params)}
    # every command whose store defaults to ./results takes it through the one shared option; verify and extract
    # must be told which store (no default), so theirs is required
    helps = {path: p.help for path, p in stores.items() if not p.required}
    assert {("run",), ("status",), ("forget",), ("query",), ("estimate",), ("report",), ("demo",)} <= set(helps)
    assert set(helps.values()) == {StoreOption.__metadata__[0].help}
    assert {path for path, p in stores.items() if p.required} == {("verify",), ("extract",)}


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_no_args_shows_usage():
    result = runner.invoke(app, [])
    assert "Usage" in result.output


def test_bad_input_is_one_line_on_stderr_with_exit_2_and_brackets_kept(tmp_path):
    """Every command: user errors exit 2 with one `error:` line (no traceback); markup must not eat
    `[[tasks]]` from the message."""
    study = tmp_path / "s.toml"
    study.write_text('name = "t"\n[[networks]]\nname = "dagan"\n[[datasets]]\nname = "shepp-logan"\n'
                     '[[tasks]]\nname = "attack"\nparams = { etaa = 0.1 }\n')
    for args in (["run", str(study)], ["status", str(study)], ["report", "--study", str(study)],
                 ["forget", str(study), "--task", "attack", "--reason", "r"],
                 ["query", "SELECT 1", "--store", str(tmp_path / "nowhere")],
                 ["estimate", "--table", "ball", "--store", str(tmp_path / "nowhere")],
                 ["zoo", "eval", "nosuchnet"], ["physics", "show", "xray", "--out", str(tmp_path / "x.png")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
        assert "Traceback" not in result.output
    result = runner.invoke(app, ["run", str(study)])
    assert f"{study}: [[tasks]] #1 (attack)" in result.stderr and "'etaa'" in result.stderr


def test_interrupt_exits_130_with_a_resume_hint(monkeypatch, tmp_path):
    import survey.engine.scheduler as scheduler

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(scheduler, "run_study", interrupted)
    study = tmp_path / "s.toml"
    study.write_text('name = "t"\n[[networks]]\nname = "dagan"\n[[datasets]]\nname = "shepp-logan"\n'
                     '[[tasks]]\nname = "sweep"\n')
    result = runner.invoke(app, ["run", str(study)])
    assert result.exit_code == 130
    assert result.stderr.strip() == "interrupted; rerun to resume"
