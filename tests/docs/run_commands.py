"""Run documented commands one after another in this one Python process, as ``python SCRIPT ARGS`` and
``python -m MODULE ARGS`` would, so that torch, Lightning and transformers are imported once instead
of once per command (about 10 s each on a 2-core CI machine).

    python tests/docs/run_commands.py PLAN.json RESULTS.json

PLAN.json: a list of ``{"argv": [...], "stdin": str | null}``, argv starting with ``python``; a
``<run>`` in an argument becomes the oldest folder in ``logs/train/runs`` (the first train.py run). Each
command runs in the current directory with its own ``sys.argv`` and stdin; its exit status
(``SystemExit`` code, 1 for an uncaught exception, 0 otherwise) and wall time go to RESULTS.json.
Before each command a line ``@@@ command N`` is printed on stdout and stderr, so its output can be
found in the log.
"""

from __future__ import annotations

import io
import json
import runpy
import shlex
import sys
import time
import traceback
from pathlib import Path


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def run_one(argv: list[str], stdin: str | None) -> int:
    """Execute one ``python ...`` command line in this process; its exit status."""
    if argv[0] != "python":
        raise ValueError(f"not a python command: {argv}")
    saved_argv, saved_stdin = sys.argv, sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    try:
        if argv[1] == "-m":
            sys.argv = [argv[2], *argv[3:]]
            runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        else:
            sys.argv = argv[1:]
            runpy.run_path(argv[1], run_name="__main__")
    except SystemExit as exc:
        return _exit_code(exc)
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.argv, sys.stdin = saved_argv, saved_stdin
        _reset_hydra()
    return 0


def _reset_hydra() -> None:
    """Hydra keeps its config search path in a process-wide singleton; each command starts afresh."""
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()


def _with_run(arg: str) -> str:
    if "<run>" not in arg:
        return arg
    runs = sorted(p.name for p in Path("logs/train/runs").iterdir())
    return arg.replace("<run>", runs[0] if runs else "<run>")


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    results = []
    last_start = 0.0
    for i, step in enumerate(plan):
        # train.py names its run folder by the second; two runs must not share one
        time.sleep(max(0.0, last_start + 1.05 - time.time()))
        last_start = time.time()
        argv = [_with_run(arg) for arg in step["argv"]]
        for stream in (sys.stdout, sys.stderr):
            print(f"@@@ command {i}: {shlex.join(argv)}", file=stream, flush=True)
        rc = run_one(argv, step["stdin"])
        results.append({"rc": rc, "seconds": round(time.time() - last_start, 1)})
        print(f"@@@ command {i} rc={rc}", file=sys.stderr, flush=True)
        Path(sys.argv[2]).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
