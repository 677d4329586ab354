"""Every script in benchmarks/ still runs against the library as it is: each is started with
``--help`` in one fresh process (its imports resolve, its arguments parse)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))

PROBE = """
import os, runpy, sys
failed = []
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))  # as `python benchmarks/x.py` has it
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as e:
        if e.code not in (0, None):
            failed.append(f"{path}: exit {e.code}")
    except Exception as e:
        failed.append(f"{path}: {type(e).__name__}: {e}")
    else:
        failed.append(f"{path}: --help did not exit")
sys.stderr.write("".join(f"FAILED {f}\\n" for f in failed))
"""


def test_every_benchmark_script_starts():
    assert len(SCRIPTS) >= 10
    r = subprocess.run([sys.executable, "-c", PROBE, *map(str, SCRIPTS)], capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    failed = [line for line in r.stderr.splitlines() if line.startswith("FAILED ")]
    assert not failed, failed
    assert r.stdout.count("usage:") == len(SCRIPTS)
