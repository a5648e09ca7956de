"""P1 and P5: one full `digestmail run` (ingest, select, render, build, send to smtp-sink) as a subprocess,
its wall time beside Postfix's smtp-source sending as many messages of the same mean size to the same
sink in the same run, and the run's peak RSS. `python3 -m bench.cycle [N]`.
"""

from __future__ import annotations

import json
import random
import resource
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


def measure(subscribers: int = 10_000, papers: int = 1_000) -> dict[str, Any]:
    if not (shutil.which("smtp-sink") and shutil.which("smtp-source")):
        return {"skipped": "smtp-sink/smtp-source missing: apt-get install postfix"}
    with tempfile.TemporaryDirectory() as tmp, sink() as port:
        folder = Path(tmp)
        config = setup(folder, port, subscribers, papers)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "digestmail", "--config", str(config), "--now", NOW,
                                 "run", "--json"], capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - start
        rss_mb = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024
        if result.returncode not in (0, 1):
            raise RuntimeError(result.stderr[-2000:])
        report = json.loads(result.stdout)
        sent = len(report["sent"])
        sizes = [p.stat().st_size for p in []]  # sizes are not kept by the sink: estimate below
        del sizes
        from .smtp import messages
        mean = sum(map(len, messages(50))) // 50
        start = time.perf_counter()
        subprocess.run(["smtp-source", "-s", "10", "-m", str(max(sent, 1)), "-l", str(mean), "-f",
                        "papers@example.org", "-t", "reader@example.org", f"127.0.0.1:{port}"],
                       check=True, timeout=1800)
        ref = time.perf_counter() - start
    return {"subscribers": subscribers, "papers": papers, "sent": sent, "wall_seconds": wall,
            "smtp_source_seconds": ref, "wall_ratio_to_smtp_source": wall / ref, "peak_rss_mb": rss_mb,
            "mean_bytes_estimated": mean}


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    print(measure(n))
