"""``python -m renderfarm.worker --pool cpu``: a worker for one pool.

It subscribes to the pool's four priority queues, highest first. The CPU pool
runs a prefork pool (one process per core by default); GPU pools run one job at a
time in one warm child process that keeps its model loaded.
"""

from __future__ import annotations

import argparse
import os

from renderfarm.core.queues import WorkloadClass, pool_queues


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="renderfarm-worker")
    parser.add_argument("--pool", choices=[w.value for w in WorkloadClass], default=os.environ.get("RF_POOL", "cpu"))
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--loglevel", default=os.environ.get("RF_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)

    os.environ["RF_POOL"] = args.pool
    from renderfarm.worker import identity
    from renderfarm.worker.celery_app import app
    from renderfarm.worker.bootsteps import RenderfarmStep
    from renderfarm.worker import signals  # noqa: F401  (warm-up at process start)

    # Fail at start, naming the setting, rather than on the first job (e.g. a bad model path).
    from renderfarm.core.settings import get_settings
    from renderfarm.worker.workloads import pool_module

    check = getattr(pool_module(args.pool), "check_settings", None)
    if check is not None:
        try:
            check(get_settings())
        except Exception as exc:
            raise SystemExit(f"renderfarm worker ({args.pool}): {exc}") from None

    app.steps["consumer"].add(RenderfarmStep)
    from renderfarm.worker import recycling

    recycling.configure(app, args.pool, get_settings())
    concurrency = args.concurrency
    if concurrency is None:
        concurrency = (os.cpu_count() or 1) if args.pool == WorkloadClass.cpu else 1
    app.worker_main([
        "worker",
        f"--queues={','.join(pool_queues(args.pool))}",
        f"--hostname={identity.worker_name(args.pool)}",
        "--pool=prefork",
        f"--concurrency={concurrency}",
        f"--loglevel={args.loglevel}",
        "--without-gossip",
        "--without-mingle",
    ])


if __name__ == "__main__":
    main()
