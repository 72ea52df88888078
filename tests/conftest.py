"""Test session set-up: offline, caches in temporary folders, shared fixtures."""

import os
import tempfile

_scratch = tempfile.mkdtemp(prefix="specbench-tests-")
for _var in ("HF_HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME"):
    os.environ[_var] = os.path.join(_scratch, _var.lower())
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["MPLBACKEND"] = "Agg"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"

pytest_plugins = ["tests.checkpoints", "tests.toy_fixtures", "tests.workflow_fixtures"]

# Test models are tiny: one thread is fastest, and avoids oversubscribing a shared 2-core CI machine.
import torch  # noqa: E402

torch.set_num_threads(1)
