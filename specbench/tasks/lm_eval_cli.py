"""`specbench-lm-eval`: lm-eval's own command line, with `--model specbench` and the offline tasks available.

lm-eval 0.4.x resolves `--model NAME` only against models registered in its process (it
reads no plugin entry points), so this command registers SpecbenchLM, then hands its
arguments unchanged to lm-eval's CLI. It also points `--include_path` at the generated
offline task definitions (`gsm8k_offline`, `humaneval_offline`; see
`specbench.tasks.lm_eval_offline`) unless the user gave an include path of their own:

    specbench-lm-eval --model specbench --model_args target=T,draft=D,k=4 \\
        --tasks gsm8k_offline --metadata '{"gsm8k_test": "../shared/data/gsm8k/test.jsonl"}' \\
        --limit 10 --output_path results/

Equivalent: `python -m specbench.tasks.lm_eval_cli ...`.
"""

from __future__ import annotations

import os
import sys
import tempfile

from specbench.errors import SpecbenchError
from specbench.tasks.lm_eval_offline import OFFLINE_TASK_NAMES

_OFFLINE = set(OFFLINE_TASK_NAMES.values())


def _option_value(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        import specbench.tasks.lm_eval_model  # noqa: F401  (registers --model specbench)
        from lm_eval.__main__ import cli_evaluate
    except ImportError as error:
        print(f"specbench-lm-eval: error: lm-eval is not installed ({error}): pip install 'specbench[eval]'",
              file=sys.stderr)
        return 2

    tasks = {t for group in (_option_value(argv, "--tasks") or "").split(",") for t in group.split()}
    if tasks and tasks <= _OFFLINE:
        # Only local data is needed: make sure nothing tries the hub.
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="specbench-lm-eval-tasks-") as task_dir:
        if argv and _option_value(argv, "--include_path") is None and argv[0] not in ("-h", "--help"):
            from specbench.tasks.lm_eval_offline import write_offline_tasks

            argv += ["--include_path", str(write_offline_tasks(task_dir))]
        saved_argv = sys.argv
        sys.argv = ["lm-eval", *argv]
        try:
            cli_evaluate()
        except SpecbenchError as error:
            print(f"specbench-lm-eval: error: {error}", file=sys.stderr)
            return error.exit_code
        except SystemExit as exit_:
            return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        finally:
            sys.argv = saved_argv
    return 0


if __name__ == "__main__":
    sys.exit(main())
