"""The `specbench` command line.

Each subcommand lives beside the code it drives and exposes `add_arguments(parser)`
and `run(args) -> int`; this module only dispatches, importing a subcommand's module
(and so its heavy frameworks) only when that subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from specbench import __version__
from specbench.errors import SpecbenchError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("specbench.generate", "decode one prompt, baseline or speculative"),
    "toy-pair": ("specbench.toy.cli", "train the offline toy target/draft pair"),
    "run": ("specbench.workflow.run", "run every cell of one (pair, backend, task) job"),
    "check-equivalence": ("specbench.workflow.equivalence", "compare speculative and baseline tokens"),
    "aggregate": ("specbench.workflow.aggregate", "merge cell results into tables with metrics"),
    "report": ("specbench.report.build", "render the HTML/Markdown report from stored results"),
    "compare": ("specbench.report.compare", "flag regressions between two result sets"),
    "history": ("specbench.report.history", "append a run's summary to a history file"),
    "profile-step": ("specbench.profile_step", "measure forward latency per number of new tokens"),
}


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specbench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"specbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if not _module_available(module_name):
            continue
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except SpecbenchError as error:
        print(f"specbench {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"specbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
