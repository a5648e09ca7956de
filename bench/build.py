"""Building emails as a run's build process does: varied editions through `Composer.build`.

The render bench renders the same editions again and again, so every per-paper cache hits. A real run
is different: 10,000 subscribers with 1–3 of 200 topics over 1,000 papers (bench/cycle.py's workload)
each get their own picks and matches, so most (paper, match) pairs are new. This stage makes exactly
that run's editions (ingested into a store, chosen by the real Selector) and builds each once through
`Composer.build` with a fresh Composer per round, as a build process would (DKIM optional).

It reports CPU µs per edition (median round; unpickling the edition, which the build process also
does, apart), the same for a "hot" loop (200 editions built over and over, the render bench's
situation), a stdlib reference measured in the same run (the machine is shared: compare ratios), and
optionally a profile split and the peak RSS and CPU of a real build process (buildpool.BuildPool,
spawn) that builds all the editions.

`python3 -m bench.build [--subscribers N] [--papers N] [--rounds N] [--dkim] [--profile] [--pool]
[--editions FILE]`: with --editions, the editions (and the recipe) are saved to FILE the first time and
read from it after, so two versions of the code can be timed on exactly the same editions.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import cProfile
import dataclasses
import datetime as dt
import gc
import hashlib
import html
import itertools
import json
import os
import pickle
import pstats
import statistics
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from digestmail import buildpool, collect, sources
from digestmail.config import load_config
from digestmail.editions import Builder, Composer, Recipe
from digestmail.models import Edition
from digestmail.pipeline import all_subscribers
from digestmail.select import edition_key
from digestmail.store import Store

from .cycle import setup

NOW = dt.datetime(2026, 11, 23, 8, tzinfo=dt.timezone.utc)


def _dkim_key() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def workload(subscribers: int = 10_000, papers: int = 1_000, dkim: bool = False) -> tuple[Recipe, list[Edition]]:
    """The cycle benchmark's editions: its config, papers and subscribers, ingested and chosen for real."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = load_config(setup(folder, 25, subscribers, papers))
        with Store(config.store_path) as store:
            for path in sorted(config.inbox.iterdir()):
                data = path.read_bytes()
                store.add_digest(path.name, hashlib.sha256(data).hexdigest(),
                                 sources.parse_digest(data, NOW.date()), NOW, "inbox")
            store.sync_subscribers(all_subscribers(config), NOW)
            builder = Builder.for_store(config, store, NOW)
            editions = []
            for sid, sub in store.active_subscribers():
                choice = builder.choose(store, sid, sub)
                if choice.picks:  # keyed as deliver.py keys a run's editions
                    editions.append(Edition(sub, sid, choice.picks, NOW, edition_key(sub.email, NOW)))
        recipe = Recipe.of(config)
    if dkim:
        recipe = dataclasses.replace(recipe, dkim=("example.org", "bench", _dkim_key()))
    return recipe, editions


def _frames(editions: list[Edition]) -> list[bytes]:
    """The editions as a run hands them to one build process: buildpool's frames, in order (each
    paper in the first frame that uses it)."""
    frames = buildpool._Frames()
    return [frames.frame(ed) for ed in editions]


def _decoded(blobs: list[bytes]) -> Iterator[Edition]:
    """The editions back from their frames, as a build process reads them (in order, from scratch)."""
    buildpool._held.clear()
    for blob in blobs:
        yield buildpool._edition(pickle.loads(buildpool._receive(blob)))


def _round(recipe: Recipe, blobs: list[bytes]) -> tuple[float, float, int]:
    """CPU seconds to build every edition once with a fresh Composer (cold caches, as a build process
    starts), each decoded from its frame just before as the build process receives it (not timed:
    reported apart); the decoding's CPU seconds; the total bytes."""
    composer = Composer(recipe)
    total = 0
    build_s = unpickle_s = 0.0
    clock = time.process_time
    decoded = _decoded(blobs)
    with collect.seldom():  # as buildpool.serve builds
        for _ in blobs:
            t0 = clock()
            edition = next(decoded)
            t1 = clock()
            total += len(composer.build(edition)[1])
            build_s += clock() - t1
            unpickle_s += t1 - t0
    return build_s, unpickle_s, total


def _hot(recipe: Recipe, editions: list[Edition], n: int) -> float:
    """CPU seconds per edition when the same 200 editions are built again and again (caches warm:
    the render bench's situation)."""
    composer = Composer(recipe)
    few = editions[:200]
    with collect.seldom():
        for ed in few:
            composer.build(ed)
        start = time.process_time()
        for i in range(n):
            composer.build(few[i % len(few)])
        return (time.process_time() - start) / n


def _reference(editions: list[Edition], n: int = 200) -> float:
    """CPU seconds per edition of plain stdlib work on the same text (wrap, escape, base64 of each paper):
    independent of our code, so it tracks how busy the machine is."""
    start = time.process_time()
    for ed in editions[:n]:
        parts = []
        for pick in ed.picks:
            parts.append(textwrap.fill(pick.paper.title, 40))
            parts.append(html.escape(pick.paper.abstract))
        binascii.b2a_base64("".join(parts).encode("utf-8"))
        base64.b64encode(json.dumps([p.paper.title for p in ed.picks]).encode())
    return (time.process_time() - start) / min(n, len(editions))


_BUCKETS = (  # (label, test on (file, function name)): the first that applies
    ("dkim", lambda f, n: f.endswith("dkim.py") or "_hashlib" in n or "rsa" in f or "cryptography" in f),
    ("message.build (MIME, qp, base64)", lambda f, n: f.endswith("message.py") or "binascii" in n),
    ("jinja templates", lambda f, n: f.startswith("<template>") or "/templates/" in f or "jinja2" in f),
    ("markupsafe escaping", lambda f, n: "markupsafe" in f or "markupsafe" in n),
    ("textwrap", lambda f, n: "textwrap" in f),
    ("render.py (per paper, per match, fitting)", lambda f, n: f.endswith("render.py")),
    ("unsubscribe token", lambda f, n: f.endswith("tokens.py") or "hmac" in f),
    ("regex", lambda f, n: "re.Pattern" in n or f.endswith("re/__init__.py") or "_sre" in n),
)


def profile(recipe: Recipe, blobs: list[bytes], n: int = 3000, top: int = 25) -> dict[str, Any]:
    """cProfile of a cold round over `n` editions: self time grouped by where it is spent (shares of
    the profiled total; the profiler's own overhead inflates small functions) and the top functions."""
    composer = Composer(recipe)
    editions = list(itertools.islice(_decoded(blobs), n))
    prof = cProfile.Profile()
    prof.enable()
    for ed in editions:
        composer.build(ed)
    prof.disable()
    stats = pstats.Stats(prof)
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    buckets: dict[str, float] = {}
    functions = []
    for (file, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        label = next((b for b, test in _BUCKETS if test(file, name)), "other (builtins: str, list, dict…)")
        buckets[label] = buckets.get(label, 0.0) + tottime
        functions.append((tottime, calls, f"{Path(file).name}:{line}({name})"))
    functions.sort(reverse=True)
    return {"profiled_editions": len(editions),
            "share_by_place": {k: round(v / total, 3) for k, v in sorted(buckets.items(), key=lambda kv: -kv[1])},
            "top_self_time": [{"function": f, "calls": c, "us_per_edition": round(t / len(editions) * 1e6, 1)}
                              for t, c, f in functions[:top]]}


def build_process(recipe: Recipe, editions: list[Edition]) -> dict[str, Any]:
    """Every edition built once in one real build process (buildpool.BuildPool: spawn, pickled editions):
    its peak RSS (VmHWM) and CPU time per edition, including unpickling and sending the bytes back."""
    from digestmail.buildpool import BuildPool

    pool = BuildPool(recipe, 1)
    try:
        pool.submit(editions[0]).result()  # started and imported: what follows is the builds
        # (BuildPool.pids where it has them; before, a ProcessPoolExecutor's own table)
        (pid,) = pool.pids if hasattr(pool, "pids") else pool.pool._processes  # type: ignore[attr-defined]
        cpu0, _ = _proc(pid)
        start = time.perf_counter()
        window = []
        for ed in editions:
            window.append(pool.submit(ed))
            if len(window) >= 256:  # a bounded number in flight, as a run keeps
                window.pop(0).result()
        for fut in window:
            fut.result()
        wall = time.perf_counter() - start
        cpu1, hwm = _proc(pid)
    finally:
        pool.close()
    return {"build_process_peak_rss_mb": hwm / 1024,
            "build_process_cpu_us_per_edition": (cpu1 - cpu0) / len(editions) * 1e6, "build_process_wall_seconds": wall}


def _proc(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS in kB) of a process, from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read().rpartition(")")[2].split()
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"), hwm


def measure(subscribers: int = 10_000, papers: int = 1_000, rounds: int = 3, dkim: bool = False,
            with_profile: bool = False, pool: bool = False, editions_file: Path | None = None) -> dict[str, Any]:
    """`editions_file`: the editions and recipe are read from it if it exists (the other arguments but
    `rounds`, `with_profile` and `pool` are then moot), else made and written there."""
    setup_start = time.perf_counter()
    if editions_file is not None and editions_file.exists():
        recipe, blobs = pickle.loads(editions_file.read_bytes())
    else:
        recipe, editions = workload(subscribers, papers, dkim)
        # Kept framed, as the run hands them over: a build process never holds 10,000 editions, and
        # neither should this one while it is timed (the collector would scan them all).
        blobs = _frames(editions)
        del editions
        if editions_file is not None:
            editions_file.write_bytes(pickle.dumps((recipe, blobs)))
    setup_s = time.perf_counter() - setup_start
    few = list(itertools.islice(_decoded(blobs), 200))
    gc.collect()
    per_round, refs = [], []
    unpickle = total = 0.0
    for _ in range(rounds):  # interleaved with the reference, so both see the same machine
        refs.append(_reference(few))
        build_s, unpickle_s, total = _round(recipe, blobs)
        per_round.append(build_s / len(blobs))
        unpickle = unpickle_s / len(blobs)
    refs.append(_reference(few))
    us = statistics.median(per_round) * 1e6
    ref_us = statistics.median(refs) * 1e6
    out: dict[str, Any] = {
        "editions": len(blobs), "papers_per_edition": sum(len(e.picks) for e in few) / len(few),
        "dkim": dkim, "setup_seconds": setup_s, "us_per_edition": us, "best_us_per_edition": min(per_round) * 1e6,
        "rounds_us": [round(r * 1e6, 1) for r in per_round], "mean_bytes": int(total) // len(blobs),
        "unpickle_us_per_edition": unpickle * 1e6, "pickled_edition_bytes": sum(map(len, blobs)) // len(blobs),
        "hot_us_per_edition": _hot(recipe, few, min(2000, 10 * len(blobs))) * 1e6,
        "reference_us": ref_us, "ratio_to_reference": us / ref_us,
    }
    if with_profile:
        out["profile"] = profile(recipe, blobs)
    if pool:
        out.update(build_process(recipe, list(_decoded(blobs))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--papers", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dkim", action="store_true", help="sign every message (RSA-2048), as [delivery.dkim] does")
    parser.add_argument("--profile", action="store_true", help="cProfile split of a cold round")
    parser.add_argument("--pool", action="store_true", help="also build everything in a real build process: RSS, CPU")
    parser.add_argument("--editions", type=Path, help="read the editions from this file, or write them there "
                        "(to time two versions of the code on the same editions)")
    args = parser.parse_args()
    print(json.dumps(measure(args.subscribers, args.papers, args.rounds, args.dkim, args.profile, args.pool,
                             args.editions), indent=2))


if __name__ == "__main__":
    main()
