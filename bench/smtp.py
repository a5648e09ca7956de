"""SMTP throughput against Postfix's smtp-sink: digestmail's transport beside Postfix's own smtp-source.

Both push the same number of messages of the same size to the same sink in the same run.
`python3 -m bench.smtp` (needs Debian's postfix package for smtp-sink/smtp-source; no daemon).
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from typing import Any, Iterator

from digestmail.config import SmtpSettings
from digestmail.message import Envelope
from digestmail.smtp import SmtpTransport
from digestmail.transport import Outgoing

from .render import editions


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def sink() -> Iterator[int]:
    port = _free_port()
    proc = subprocess.Popen(["smtp-sink", "-u", "nobody", f"127.0.0.1:{port}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def messages(n: int) -> list[bytes]:
    from digestmail import message

    eds, renderer = editions(min(n, 200))
    out = []
    for i in range(n):
        ed = eds[i % len(eds)]
        r = renderer.render(ed)
        out.append(message.build(r, sender=("Trending Papers", "papers@example.org"),
                                 to=(ed.subscriber.name, ed.subscriber.email),
                                 message_id=f"m{i}.{ed.key}@example.org", date=ed.created))
    return out


def measure(n: int = 2000, connections: int = 4) -> dict[str, Any]:
    if not (shutil.which("smtp-sink") and shutil.which("smtp-source")):
        return {"skipped": "smtp-sink/smtp-source missing: apt-get install postfix"}
    data = messages(n)
    size = sum(map(len, data)) // n
    with sink() as port:
        start = time.perf_counter()
        subprocess.run(["smtp-source", "-s", "10", "-m", str(n), "-l", str(size), "-f", "papers@example.org",
                        "-t", "reader@example.org", f"127.0.0.1:{port}"], check=True, timeout=600)
        ref_s = time.perf_counter() - start
        settings = SmtpSettings(host="127.0.0.1", port=port, security="none", username="", password_env="",
                                timeout=30, ca_file=None, max_connections=connections)
        transport = SmtpTransport(settings)
        failed: list[object] = []
        start = time.perf_counter()
        transport.send_many((Outgoing(Envelope("papers@example.org", (f"u{i}@example.org",)), str(i), msg, ready=True)
                             for i, msg in enumerate(data)),
                            lambda item, error: error is not None and failed.append(error))
        transport.close()
        ours_s = time.perf_counter() - start
        if failed:
            raise RuntimeError(f"{len(failed)} messages failed: {failed[0]}")
    return {"messages": n, "mean_bytes": size, "connections": connections, "smtp_source_per_s": n / ref_s,
            "ours_per_s": n / ours_s, "ratio_to_smtp_source": ref_s / ours_s, "at": dt.datetime.now(dt.timezone.utc).isoformat()}


if __name__ == "__main__":
    print(measure())
