"""P1 and P5: one full `digestmail run` (ingest, select, render, build, send to smtp-sink) as a subprocess,
its wall time beside Postfix's smtp-source sending as many messages of the same mean size to the same
sink in the same run, and the run's peak RSS. `python3 -m bench.cycle [N]`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .smtp import sink
from .workload import hf_days, vocabulary

NOW = "2026-11-23T08:00:00+00:00"


TICK = os.sysconf("SC_CLK_TCK")


def _tree(root: int) -> dict[int, tuple[int, float, int, float]]:
    """A process and all its descendants now (build processes included): pid → (RSS in kB, CPU seconds,
    peak RSS so far in kB, of the CPU seconds those in the kernel). The tree is walked through each
    thread's /proc children list (~0.4 ms a sample), not by reading every process on the machine
    (~5 ms, 5 % of a core at 10 samples a second, taken from the run being measured)."""
    tree: dict[int, tuple[int, float, int, float]] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read().rpartition(")")[2].split()
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                    todo.extend(map(int, f.read().split()))
        except OSError:
            continue  # gone meanwhile
        tree[pid] = (int(fields.get("VmRSS", "0 kB").split()[0]), (int(stat[11]) + int(stat[12])) / TICK,
                     int(fields.get("VmHWM", "0 kB").split()[0]), int(stat[12]) / TICK)
    return tree


def _wait_sampling(proc: subprocess.Popen[bytes], every: float = 0.1) -> dict[str, float]:
    """Wait for `proc`, sampling its process tree every `every` seconds: its own peak RSS and CPU time,
    the peak RSS of the whole tree (build processes too) and the CPU time of the others.

    The process's own peak is its VmHWM from /proc, not wait4's ru_maxrss: that one also counts the
    image of this (benchmark) process the child was forked from before it exec'd Python, so after a
    large stage it reported this process's size, not the run's.
    """
    tree_peak = main_peak = 0
    helpers: dict[int, tuple[float, float]] = {}  # pid → (CPU, kernel CPU) seconds
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            # wait4's times include the build processes the run waited for: theirs are taken out.
            cpu, kernel = (sum(t[i] for t in helpers.values()) for i in (0, 1))
            return {"status": status, "main_rss_kb": main_peak, "tree_rss_kb": tree_peak,
                    "main_cpu_s": usage.ru_utime + usage.ru_stime - cpu, "main_system_cpu_s": usage.ru_stime - kernel,
                    "helpers_cpu_s": cpu}
        tree = _tree(proc.pid)
        tree_peak = max(tree_peak, sum(t[0] for t in tree.values()))
        main_peak = max(main_peak, tree.get(proc.pid, (0, 0.0, 0, 0.0))[2])
        helpers.update({p: (t[1], t[3]) for p, t in tree.items() if p != proc.pid})
        time.sleep(every)


def _mean_bytes(subscribers: int, papers: int, every: int = 10) -> int:
    """The mean size of the run's own messages, for smtp-source's `-l` (smtp-sink keeps no sizes):
    the same workload's editions, chosen as the run chooses them, every `every`-th one built here.
    The run's messages are exactly these (the same config, papers, subscribers and moment)."""
    from digestmail.editions import Composer

    from .build import workload  # here: bench/build.py imports this module

    recipe, editions = workload(subscribers, papers)
    composer = Composer(recipe)
    sizes = [len(composer.build(edition)[1]) for edition in editions[::every]]
    return sum(sizes) // max(len(sizes), 1)


def setup(folder: Path, port: int, subscribers: int, papers: int) -> Path:
    rng = random.Random(11)
    words = vocabulary()[:300]
    (folder / "inbox").mkdir()
    for i, data in enumerate(hf_days(papers, per_file=100)):
        (folder / "inbox" / f"day-{i:03d}.json").write_bytes(data)
    topics = {f"t{i}": " OR ".join(rng.sample(words, 3)) for i in range(200)}
    with (folder / "subscribers.csv").open("w", encoding="utf-8") as f:
        f.write("email,name,topics,max_papers\n")
        for i in range(subscribers):
            f.write(f"u{i}@example.org,Reader {i},{';'.join(rng.sample(sorted(topics), rng.randint(1, 3)))},10\n")
    config = folder / "digestmail.toml"
    config.write_text('subscribers_file = "subscribers.csv"\n[store]\npath = "store.sqlite3"\n'
                      '[sources]\ninbox = "inbox"\n[delivery]\ntransport = "smtp"\n'
                      'from = "Trending Papers <papers@example.org>"\n'
                      f'[delivery.smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n[topics]\n'
                      + "".join(f'{k} = "{v}"\n' for k, v in topics.items()), encoding="utf-8")
    return config


def memory(subscribers: int = 100_000, papers: int = 1_000) -> dict[str, Any]:
    """P5: the same run at a larger size, for its peak RSS (the wall-time reference is skipped)."""
    return measure(subscribers, papers, reference=False)


def measure(subscribers: int = 10_000, papers: int = 1_000, reference: bool = True, repeats: int = 1) -> dict[str, Any]:
    """`repeats` runs, each followed by its smtp-source reference (the machine's speed drifts by a
    fifth within minutes: a run is compared with a reference taken right after it); the figures are
    those of the run with the median ratio, and `runs` has every pair."""
    if not (shutil.which("smtp-sink") and shutil.which("smtp-source")):
        return {"skipped": "smtp-sink/smtp-source missing: apt-get install postfix"}
    with tempfile.TemporaryDirectory() as tmp, sink() as port:
        base = Path(tmp) / "workload"
        base.mkdir()
        setup(base, port, subscribers, papers)
        env = _with_bytecode(Path(tmp) / "pycache", Path(tmp) / "warm-up", port)
        mean = _mean_bytes(subscribers, papers) if reference else 0
        runs = []
        for i in range(max(repeats, 1)):
            folder = Path(tmp) / f"run{i}"
            shutil.copytree(base, folder)  # a fresh store each time
            out = _run(folder, subscribers, papers, env)
            if reference:
                start = time.perf_counter()
                subprocess.run(["smtp-source", "-s", "10", "-m", str(max(out["sent"], 1)), "-l", str(mean), "-f",
                                "papers@example.org", "-t", "reader@example.org", f"127.0.0.1:{port}"],
                               check=True, timeout=1800)
                ref = time.perf_counter() - start
                out.update({"smtp_source_seconds": ref, "wall_ratio_to_smtp_source": out["wall_seconds"] / ref,
                            "mean_bytes_estimated": mean})
            runs.append(out)
    key = "wall_ratio_to_smtp_source" if reference else "wall_seconds"
    median = sorted(runs, key=lambda r: r[key])[len(runs) // 2]
    return {**median, "runs": [{k: round(r[k], 3) for k in ("wall_seconds", "smtp_source_seconds",
                                                              "wall_ratio_to_smtp_source", "main_process_cpu_seconds",
                                                              "build_processes_cpu_seconds") if k in r}
                               for r in runs]}


def _with_bytecode(cache: Path, folder: Path, port: int) -> dict[str, str]:
    """The environment for the runs: Python's compiled modules kept (in `cache`) and already made, as
    an installed program has them (pip compiles them at install). This machine sets
    PYTHONDONTWRITEBYTECODE, which alone would make each run and each build process compile
    digestmail's source again (~0.1 s a process). The modules are made by a small run of the same
    kind into the same sink (250 subscribers: enough for a build process): with the prefix set,
    Python reads even the standard library's compiled modules from it, and importing the CLI alone
    left ~90 (asyncio, aiosmtplib, …) to be compiled during the first measured run."""
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(cache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    folder.mkdir()
    setup(folder, port, 250, 100)
    subprocess.run([sys.executable, "-m", "digestmail", "--config", str(folder / "digestmail.toml"), "--now", NOW,
                    "run"], env=env, check=True, capture_output=True, timeout=600)
    return env


def _run(folder: Path, subscribers: int, papers: int, env: dict[str, str]) -> dict[str, Any]:
    """One `digestmail run` of the workload in `folder`: its wall time, CPU and peak RSS."""
    config = folder / "digestmail.toml"
    start = time.perf_counter()
    out_path, err_path = folder / "report.json", folder / "run.log"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "digestmail", "--config", str(config), "--now", NOW,
                                 "run", "--json"], stdout=out, stderr=err, env=env)
        # wait4 gives this child's own peak RSS (RUSAGE_CHILDREN would be the max over all children);
        # the build processes it starts are sampled from /proc with it.
        sample = _wait_sampling(proc)
    proc.returncode = os.waitstatus_to_exitcode(int(sample["status"]))
    wall = time.perf_counter() - start
    rss_mb = max(sample["main_rss_kb"], sample["tree_rss_kb"]) / 1024  # the tree's, or alone its largest
    if proc.returncode not in (0, 1):
        raise RuntimeError(err_path.read_text()[-2000:])
    report = json.loads(out_path.read_text())
    return {"subscribers": subscribers, "papers": papers, "sent": report["counts"]["sent"], "wall_seconds": wall,
            "peak_rss_mb": rss_mb, "main_process_peak_rss_mb": sample["main_rss_kb"] / 1024,
            "main_process_cpu_seconds": sample["main_cpu_s"], "main_process_kernel_seconds": sample["main_system_cpu_s"],
            "build_processes_cpu_seconds": sample["helpers_cpu_s"]}

if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    print(json.dumps(measure(n, repeats=int(sys.argv[2]) if len(sys.argv) > 2 else 1), indent=2))
