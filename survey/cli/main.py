"""`python -m survey.cli.main` runs the CLI (used where the console script is not on PATH)."""

from survey.cli import run_cli

if __name__ == "__main__":
    run_cli()
