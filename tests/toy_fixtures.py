"""Session fixtures around the offline toy pair (a pytest plugin: list it in `pytest_plugins`).

`toy_pair_quick` trains a reduced-budget pair once per test session: ordinary checkpoint
folders that load and generate everywhere a real pair would, but of low quality.
"""

from __future__ import annotations

from pathlib import Path

import pytest

QUICK_STEPS_SCALE = 0.05  # 35 target and 50 draft steps: seconds on 2 cores, enough to emit answer-shaped text
QUICK_EVAL_PROBLEMS = 5


@pytest.fixture(scope="session")
def toy_pair_quick(tmp_path_factory) -> Path:
    """Folder with target/, draft/ and toy_pair.json of a quickly trained toy pair (seed 0).

    Built on one thread: when other processes share the 2 cores, two OpenMP threads wait on
    each other at every operation and a training step was seen to take ten times longer.
    """
    import torch

    from specbench.toy.train import build_toy_pair

    out = tmp_path_factory.mktemp("toy-pair-quick") / "pair"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build_toy_pair(out, steps_scale=QUICK_STEPS_SCALE, seed=0, eval_problems=QUICK_EVAL_PROBLEMS)
    finally:
        torch.set_num_threads(threads)
    return out
