"""Dependencies point inward: the operator reads Redis through core, never the worker package."""

import subprocess
import sys


def test_the_operator_does_not_import_the_worker_package():
    code = ("import sys, renderfarm.operator.main, renderfarm.operator.queue_reader; "
            "print(sorted(m for m in sys.modules if m.startswith('renderfarm.worker')))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert out == "[]"
