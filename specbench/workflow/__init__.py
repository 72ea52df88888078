"""The sweep: configs, the per-job runner, the results store, equivalence and aggregation.

The Snakemake workflow (`Snakefile`, `workflow/rules/`) only wires these together; each
stage is a command (`specbench run`, `specbench check-equivalence`, `specbench aggregate`,
`specbench report`, and `python -m specbench.workflow.prepare|quality|sampling`), so the
same command runs by hand, in CI or on a cluster.
"""

from __future__ import annotations

import argparse
import sys

from specbench.errors import SpecbenchError


def standalone_main(module, prog: str, argv: list[str] | None = None) -> int:
    """`python -m <module>` for a command module: same arguments and one-line errors as `specbench`."""
    parser = argparse.ArgumentParser(prog=prog)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return int(module.run(args) or 0)
    except SpecbenchError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return error.exit_code
