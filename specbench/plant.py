"""Test-only planted bugs, so that tests can show the checks catch real mistakes.

Set SPECBENCH_PLANT_BUG to one of PLANTABLE; engines read it when a backend is built.
Never set it outside tests: results made with it are wrong on purpose.
"""

from __future__ import annotations

import os

from specbench.errors import SpecbenchError

PLANTABLE = {
    "always-accept": "speculative sampling accepts every drafted token (breaks losslessness)",
    "rollback-off-by-one": "after an iteration the caches are rolled back one position too far",
}


def planted_bug() -> str | None:
    value = os.environ.get("SPECBENCH_PLANT_BUG") or None
    if value is not None and value not in PLANTABLE:
        raise SpecbenchError(f"SPECBENCH_PLANT_BUG={value!r} is not one of {', '.join(PLANTABLE)}")
    return value
