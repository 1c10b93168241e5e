"""The ``charrnn`` command (setup.py's entry point) and ``python -m charrnn``.

The command line (charrnn/cli/commands.py) needs torch, which takes a second or two to load: a Ctrl-C
in that time ends with one line and status 130, as it does once the command runs.
"""
import sys


def main() -> None:
    try:
        from charrnn.cli.commands import main as cli
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    cli(prog_name="charrnn")


if __name__ == "__main__":
    main()
