"""`python3 -m bench [--quick] [--json FILE]`: every stage benchmark, a table, a JSON file, targets met or missed.

Each stage prints ratios against a reference measured in the same run (the machine is shared and
noisy: trust ratios more than absolute figures). --quick runs tiny sizes: it checks that the harness
works (the test suite runs it), not how fast anything is.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

from . import build, cycle, dkim, ingest, render, select, smtp

# name, function, full-size arguments, quick arguments, (metric, target, "min"|"max"), what it means
STAGES: list[tuple[str, Callable[..., dict[str, Any]], dict[str, Any], dict[str, Any], tuple[str, float, str], str]] = [
    ("ingest", ingest.measure, {"n_papers": 10_000}, {"n_papers": 300, "rounds": 1},
     ("papers_per_s", 10_000, "min"), "P4: parse + identity + store, papers/s (ref: bare SQLite inserts)"),
    ("select", select.measure, {"n_subscribers": 100_000, "n_papers": 1_000},
     {"n_subscribers": 300, "n_papers": 100, "naive_sample": 20, "rounds": 1},
     ("select_seconds", 2.0, "max"), "P3: 100k subscribers x 1k papers, seconds (ref: per-subscriber regex scan)"),
    ("render", render.measure, {"n": 2000}, {"n": 30, "naive_sample": 5, "rounds": 1},
     ("emails_per_s", 1_500, "min"), "P2: render + MIME, emails/s on one core (ref: MJML per email + EmailMessage)"),
    ("build", build.measure, {"subscribers": 10_000, "papers": 1_000}, {"subscribers": 30, "papers": 100, "rounds": 1},
     ("us_per_edition", 700, "max"),
     "build process CPU per edition, µs: the cycle's 10k varied editions through Composer.build"),
    ("smtp", smtp.measure, {"n": 2000}, {"n": 20},
     ("ratio_to_smtp_source", 0.4, "min"), "SMTP transport to smtp-sink, as a share of smtp-source's rate (same sink, run)"),
    ("cycle", cycle.measure, {"subscribers": 10_000, "papers": 1_000, "repeats": 3}, {"subscribers": 30, "papers": 100},
     ("wall_ratio_to_smtp_source", 3.0, "max"),
     "P1: a whole `run` (10k subscribers) to smtp-sink, wall time / smtp-source's for as many messages (median of 3)"),
    ("memory", cycle.memory, {"subscribers": 100_000, "papers": 1_000}, {"subscribers": 30, "papers": 100},
     ("peak_rss_mb", 150, "max"),
     "P5: peak RSS of a whole `run` for 100k subscribers, MB (main and build processes together)"),
    ("dkim", dkim.measure, {}, {"rounds": 1, "seconds": 0.2},
     ("signatures_per_s", 1_000, "min"), "P6: DKIM signatures/s, ~93 KB message (ref: dkimpy)"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check the harness, not the speed")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"), help="where to write the results")
    parser.add_argument("--only", action="append", help="run only this stage (repeatable)")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"machine": {"python": sys.version.split()[0], "platform": platform.platform()},
                               "quick": args.quick, "stages": {}}
    rows = []
    for name, fn, full, quick, (metric, target, kind), what in STAGES:
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        out = fn(**(quick if args.quick else full))
        if "skipped" in out:
            print(f"{name:8} skipped: {out['skipped']}")
            results["stages"][name] = out
            continue
        value = out.get(metric)
        met = value is not None and (value >= target if kind == "min" else value <= target)
        ratio = (value / target if kind == "min" else target / value) if value else 0.0
        out.update({"target": target, "metric": metric, "met": met, "ratio_to_target": ratio,
                    "stage_seconds": time.perf_counter() - start})
        results["stages"][name] = out
        rows.append((name, what, metric, value, target, kind, met, ratio))
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"{'stage':8} {'metric':24} {'value':>12} {'target':>10}  result")
    for name, what, metric, value, target, kind, met, ratio in rows:
        bound = ">=" if kind == "min" else "<="
        verdict = "met" if met else "MISSED"
        print(f"{name:8} {metric:24} {value:12.1f} {bound}{target:9g}  {verdict} ({ratio:.2f}x of target)  {what}")
    print(f"peak RSS {results['peak_rss_mb']:.0f} MB; results in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
