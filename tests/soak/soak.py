"""``make soak``: the fault soak. At least 500 mixed ffmpeg jobs across two CPU
workers with prefork pools while a fault loop injects at least 100 faults (SIGKILL
of pool processes, SIGTERM and restart of whole workers, SIGKILL of beat, Redis
restarts with its append-only file, pause/resume). At the end every job must be
terminal, none lost, and every succeeded job's side effect must have run once.

    python -m tests.soak.soak [--jobs 500] [--faults 100] [--workers 2] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from tests.support.soak import SoakConfig, run_soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soak")
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--faults", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (logs, ledger)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="rf-soak-"))
    config = SoakConfig(jobs=args.jobs, faults=args.faults, workers=args.workers, concurrency=args.concurrency,
                        seed=args.seed)
    print(f"soak: {config.jobs} jobs, {config.faults} faults, {config.workers} workers x {config.concurrency} "
          f"processes, in {root}", flush=True)
    report = run_soak(root, config, log=lambda line: print(line, flush=True))
    print("\n".join(report.lines()))
    print("soak: PASS" if report.ok() else "soak: FAIL")
    if args.keep or not report.ok():
        print(f"logs and run ledger kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
