"""User-facing errors.

Anything a user can get wrong (a path, a config key, a flag) raises `SpecbenchError`
with a one-line message naming the culprit; the CLI prints it as
`specbench: error: ...` and exits non-zero, without a traceback.
"""

from __future__ import annotations


class SpecbenchError(Exception):
    """A problem with the user's input, reported as one line and exit status 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
