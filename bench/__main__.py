"""``python -m bench``: every group, side by side, ratios to the floor measured in the same run.

python -m bench                 # the full run (tens of minutes): 100k users, 1M/10M log rows …
python -m bench --quick         # under a minute, small sizes: a smoke test (CI runs it)
python -m bench --groups get,cache_hit --out bench/results/today.txt
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

from bench import env as bench_env
from bench.groups import GROUPS, Result, Sizes

# The bulk group overlaps client and server work (COPY, pipelining): it runs on split CPUs.
SPLIT = {"bulk"}
# Groups that run several servers and client processes of their own: no pinning.
UNPINNED = {"scale"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds: finishes in under a minute")
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"comma-separated, from: {', '.join(GROUPS)}")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    parser.add_argument(
        "--rounds", type=int, help="timed rounds per group (default 11, 3 with --quick): more on a noisy machine"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin client and servers to CPUs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    warnings.simplefilter("ignore")
    names = [g.strip() for g in args.groups.split(",") if g.strip()]
    unknown = [g for g in names if g not in GROUPS]
    if unknown:
        parser.error(f"unknown groups: {', '.join(unknown)}")
    sizes = Sizes.for_run(args.quick)
    if args.rounds:
        sizes.rounds = args.rounds
    started = time.monotonic()
    env = bench_env.start()
    report: list[str] = []
    results: list[Result] = []
    try:
        header = [
            f"datalayer benchmarks ({'quick' if args.quick else 'full'} run, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
            *bench_env.machine(env),
        ]
        header.append(
            f"settings: rounds={sizes.rounds} (+1 warm-up), ops/batch={sizes.ops}, users={sizes.users:,}, "
            f"bulk rows={sizes.bulk_rows:,} x {sizes.bulk_rounds}, log rows={sizes.log_small:,}/"
            f"{sizes.log_small * 10:,}, backup rows={sizes.backup_rows:,}"
        )
        print("\n".join(header), flush=True)
        report += header
        for name in names:
            if args.no_pin or name in UNPINNED:
                env.unpin()
                placement = "not pinned"
            else:
                placement = env.place(same=name not in SPLIT)
            t0 = time.monotonic()
            for result in GROUPS[name](env, sizes):
                result.notes.append(f"placement: {placement}; group took {time.monotonic() - t0:.0f} s")
                results.append(result)
                text = "\n" + result.text()
                print(text, flush=True)
                report.append(text)
        met = sum(ok for r in results for _, _, ok in r.targets)
        total = sum(len(r.targets) for r in results)
        footer = f"\ntargets met: {met}/{total}; run took {time.monotonic() - started:.0f} s"
        print(footer)
        report.append(footer)
    finally:
        env.close()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(report) + "\n")
    if args.json:
        args.json.write_text(json.dumps({"header": report[:5], "groups": [r.as_dict() for r in results]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
