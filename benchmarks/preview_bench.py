"""Offline preview time per cloud: `servestack preview STACK --offline --json`, cold process.

    python benchmarks/preview_bench.py [--runs 5] [--json]

Generates the embedded Mixtral spec's best stack on each cloud into a temporary folder, then
times a fresh `servestack preview --offline --json` process per run (SDK import included: that is
what a reviewer or a CI job waits for) and reports the resource count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLOUDS = ("aws", "gcp", "azure")


def servestack(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = "import sys; from servestack.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, check=True,
                          capture_output=True, text=True)


def measure(cloud: str, runs: int, folder: Path) -> dict:
    stack = f"bench-{cloud}"
    servestack("generate", "--cloud", cloud, "--stack", stack, "--gcp-project", "bench",
               cwd=folder)
    times, count = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        result = servestack("preview", stack, "--offline", "--json", cwd=folder)
        times.append(time.perf_counter() - start)
        count = len(json.loads(result.stdout)["resources"])
    return {"median_s": round(statistics.median(times), 2), "max_s": round(max(times), 2),
            "resources": count, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = {cloud: measure(cloud, args.runs, Path(tmp)) for cloud in CLOUDS}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for cloud, row in report.items():
        print(f"preview --offline {cloud:>5}: median {row['median_s']} s (max {row['max_s']} s, "
              f"{row['resources']} resources, {row['runs']} runs)")


if __name__ == "__main__":
    main()
