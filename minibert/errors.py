"""The one kind of error a user can cause, and how every command line reports it.

A `UserError` is something the person at the keyboard can fix: a wrong flag, a file that is missing or not what
it claims, a run folder in the wrong state. Its message is one line that names the flag or file and says what to
do. Every entry point runs its `main` through `run_cli`, which prints `error: <message>` and exits 2 for these;
anything else is a bug of ours and keeps its traceback. MINIBERT_DEBUG=1 (or `--debug` where a command has it)
shows the traceback of a user error too.

lora/ and quant/ never import minibert, so they raise their own types (lora.AdapterError, quant.QuantError);
a command that composes them passes those to `run_cli` as `also`.
"""

import argparse
import os
import sys


class UserError(ValueError):
    """Bad input a user can fix. A ValueError, so callers that caught ValueError before still do."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, except that a flag it cannot read (`--lr fast`, an unknown flag, a missing argument) is a
    UserError like any other: one line, `error: ...`, instead of argparse's usage block and message."""

    def error(self, message: str):
        raise UserError(f"{message} (see {self.prog} --help)")


def debug_requested(argv: list[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return os.environ.get("MINIBERT_DEBUG", "") not in ("", "0") or "--debug" in argv


def run_cli(main, argv: list[str] | None = None, also: tuple[type[BaseException], ...] = ()) -> int:
    """Run `main(argv)` and return the exit status: main's own when it returns an int, else 0; a user error
    becomes one line on stderr and status 2, no traceback."""
    try:
        status = main(argv)
    except (UserError, FileNotFoundError, *also) as err:
        if debug_requested(argv):
            raise
        message = str(err).strip() or type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the user asked for it, no traceback (train.py saves before it gets here)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
    return status if isinstance(status, int) and not isinstance(status, bool) else 0
