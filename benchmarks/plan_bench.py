"""Planner speed: cold CLI wall time and in-process plan time on catalogs 1x, 10x, 100x.

    python benchmarks/plan_bench.py [--runs 15] [--json] [--interleaved]

Cold CLI: a fresh `plan-mixtral --candidates --json` process each run (what a user waits for).
In-process: `planner.plan` on the embedded Mixtral spec over the shipped catalog, and over
synthetic catalogs made by copying every offer into 10x and 100x as many regions (same prices),
to show how plan time grows with catalog rows. "first" is the first plan of a freshly built
catalog (it groups the offers by place, which later plans reuse; the median over several
fresh catalogs), "then" the plans after it, back to back, garbage collections included. The
ratios divide the 10x and 100x medians by the 1x ones.
Targets: cold CLI <= 0.2 s, plan < 50 ms, 100x rows at most 110x the time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from servestack.catalog import Catalog

from servestack.inputs import load_inputs
from servestack.planner import plan

FACTORS = (1, 10, 100)


def byte_compile() -> None:
    """Compile the package's modules as a wheel install does. An editable install leaves them
    uncompiled, and with PYTHONDONTWRITEBYTECODE=1 (set on these machines) every cold run would
    otherwise compile them again, which is not what an installed servestack does."""
    import compileall

    import servestack.catalog
    import servestack.components

    import servestack

    for package in (servestack, servestack.catalog, servestack.components):
        compileall.compile_dir(Path(package.__file__).parent, quiet=1)


def cold_cli(runs: int) -> list[float]:
    byte_compile()
    exe = shutil.which("plan-mixtral")
    command = [exe] if exe else [sys.executable, "-c",
                                 "import sys; from servestack.cli.main import plan_mixtral; "
                                 "sys.exit(plan_mixtral())"]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([*command, "--candidates", "--json"], check=True,
                       stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def scaled(catalog: Catalog, factor: int) -> Catalog:
    offers = [replace(o, region=f"{o.region}-x{i}" if i else o.region)
              for i in range(factor) for o in catalog.offers]
    return Catalog(gpus=catalog.gpus, offers=offers, dates=catalog.dates)


def fresh(catalog: Catalog) -> Catalog:
    """The same offers as a catalog that has not grouped them yet."""
    return Catalog(gpus=catalog.gpus, offers=catalog.offers, dates=catalog.dates)


def timed(inputs, catalog: Catalog) -> float:
    start = time.perf_counter()
    plan(inputs.spec, catalog, inputs.facts, model=inputs.model)
    return (time.perf_counter() - start) * 1000


def in_process(runs: int) -> dict[str, dict]:
    inputs = load_inputs(None)
    results: dict[str, dict] = {}
    for factor in FACTORS:
        catalog = scaled(inputs.catalog, factor)
        first = []
        for _ in range(max(3, runs // 2)):
            catalog = fresh(catalog)
            first.append(timed(inputs, catalog))
        then = [timed(inputs, catalog) for _ in range(runs)]
        results[f"{factor}x"] = {"offers": len(catalog.offers),
                                 "first_ms": round(statistics.median(first), 2),
                                 "median_ms": round(statistics.median(then), 2)}
    base = results["1x"]
    for row in results.values():
        row["ratio_first"] = round(row["first_ms"] / base["first_ms"], 1)
        row["ratio_median"] = round(row["median_ms"] / base["median_ms"], 1)
    return results


def interleaved(rounds: int) -> dict[str, float]:
    """The 1x and 100x plans taken in turn, so that neither runs with a CPU cache warmed by its
    own previous run: the first plan of each (one sample) and the median of the later ones."""
    inputs = load_inputs(None)
    catalogs = {factor: scaled(inputs.catalog, factor) for factor in (1, 100)}
    first = {factor: timed(inputs, catalog) for factor, catalog in catalogs.items()}
    then: dict[int, list[float]] = {1: [], 100: []}
    for _ in range(rounds):
        for factor, catalog in catalogs.items():
            then[factor].append(timed(inputs, catalog))
    median = {factor: statistics.median(times) for factor, times in then.items()}
    return {"first_1x_ms": round(first[1], 2), "first_100x_ms": round(first[100], 1),
            "ratio_first": round(first[100] / first[1], 1),
            "then_1x_ms": round(median[1], 2), "then_100x_ms": round(median[100], 1),
            "ratio_then": round(median[100] / median[1], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--interleaved", action="store_true",
                        help="only the 1x and 100x plans, taken in turn (see `interleaved`)")
    args = parser.parse_args()
    if args.interleaved:
        print(json.dumps(interleaved(args.runs), indent=2))
        return
    cli = cold_cli(args.runs)
    report = {
        "cold_cli_s": {"median": round(statistics.median(cli), 3), "max": round(max(cli), 3),
                       "runs": args.runs},
        "plan": in_process(max(5, args.runs // 2)),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"cold CLI plan-mixtral --candidates --json: median {report['cold_cli_s']['median']} s"
          f" (max {report['cold_cli_s']['max']} s, {args.runs} runs)")
    for name, row in report["plan"].items():
        print(f"in-process plan, catalog {name:>4} ({row['offers']:>6} offers): first "
              f"{row['first_ms']} ms ({row['ratio_first']}x), then median {row['median_ms']} ms "
              f"({row['ratio_median']}x)")


if __name__ == "__main__":
    main()
