"""DKIM signing: signatures/s of digestmail.dkim for a ~93 KB message, beside dkimpy's `dkim.sign`.

Both sign the same message with the same RSA-2048 key, relaxed/simple, the same header list, in the same
run (rounds interleaved, best round kept: the machine is noisy). dkimpy is a test-only dependency; without
it only our numbers are printed. `python3 -m bench.dkim`
"""

from __future__ import annotations

import datetime as dt
import html
import time
from typing import Any, Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from digestmail import message
from digestmail.dkim import DkimSigner
from digestmail.models import RenderedEmail

from .workload import seed_papers

NOW = dt.datetime(2026, 11, 23, 8, tzinfo=dt.timezone.utc)
LIST_HEADERS = (b"List-Id: Trending Papers <papers.example.org>\r\n"
                b"List-Unsubscribe: <https://papers.example.org/u/TOKEN>,\r\n"
                b" <mailto:unsubscribe@example.org?subject=unsubscribe>\r\n"
                b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
                b"Precedence: bulk\r\n")


def email_bytes(target: int = 91_000) -> bytes:
    """A 10-card digest email (text + inline-styled HTML) padded with more cards to about `target` bytes."""
    papers = seed_papers()
    kwargs: dict[str, Any] = {}
    if hasattr(message, "ListHeaders"):  # the builder writes the list headers itself
        kwargs["list_headers"] = message.ListHeaders(
            "Trending Papers", "papers.example.org",
            ("https://papers.example.org/u/TOKEN", "mailto:unsubscribe@example.org?subject=unsubscribe"))
    cards_text, cards_html = [], []
    i = 0
    while True:
        title, abstract = papers[i % len(papers)]
        cards_text.append(f"{i + 1}. {title}\n   topic optimizers: Adam, learning rate\n\n   {abstract}\n\n")
        cards_html.append(
            '<tr><td style="padding:16px 24px;font-family:Helvetica,Arial,sans-serif;color:#111111;'
            'border-bottom:1px solid #e5e5e5"><h2 style="margin:0 0 8px;font-size:18px;line-height:24px">'
            f'<a href="https://arxiv.org/abs/2411.{10000 + i}" style="color:#1a0dab;text-decoration:none">'
            f'{html.escape(title)}</a></h2><p style="margin:0 0 8px;font-size:13px;color:#555555">'
            'topic <b>optimizers</b>: Adam, learning rate</p><p style="margin:0;font-size:14px;line-height:21px">'
            f"{html.escape(abstract)}</p></td></tr>\n")
        i += 1
        text = "Your papers, Ada\n\n" + "".join(cards_text)
        page = ('<html><body><table role="presentation" width="100%">\n' + "".join(cards_html)
                + "</table></body></html>\n")
        data = message.build(RenderedEmail(f"{i} new papers for you: Größenordnungen ✓", page, text),
                             sender=("Trending Papers", "papers@example.org"), to=("Ada Lovelace", "ada@example.org"),
                             message_id="ed-2026-11-23.ada@example.org", date=NOW, **kwargs)
        if len(data) >= target or i >= 1000:
            break
    if b"\r\nList-Unsubscribe:" not in data.partition(b"\r\n\r\n")[0]:
        head, _, body = data.partition(b"\r\n\r\n")
        data = head + b"\r\n" + LIST_HEADERS + b"\r\n" + body
    return data


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of `fn`, running it for about `seconds`."""
    fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def measure(rounds: int = 3, seconds: float = 1.0) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    data = email_bytes()
    start = time.perf_counter()
    signer = DkimSigner("example.org", "digest2026", pem)
    parse_ms = (time.perf_counter() - start) * 1e3
    signed = signer.sign(data, NOW)
    h = next(t for t in signed.split(b";") if t.strip().startswith(b"h="))
    include = [x.strip() for x in h.strip()[2:].split(b":")]
    header_data = signed[:2000]  # about what goes through RSA: the canonical headers

    try:
        import dkim  # dkimpy
    except ImportError:
        dkim = None
    if dkim is not None:
        txt = signer.dns_record().encode()
        assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: txt), "dkimpy does not verify our signature"

    ours, rsa_only, theirs = [], [], []
    for _ in range(rounds):
        ours.append(_rate(lambda: signer.sign(data, NOW), seconds))
        rsa_only.append(_rate(lambda: key.sign(header_data, padding.PKCS1v15(), hashes.SHA256()), seconds / 2))
        if dkim is not None:
            theirs.append(_rate(lambda: dkim.sign(data, b"digest2026", b"example.org", pem,
                                                  canonicalize=(b"relaxed", b"simple"), include_headers=include),
                                seconds))
    result: dict[str, Any] = {
        "message_bytes": len(data),
        "signatures_per_s": max(ours),
        "ms_per_signature": 1e3 / max(ours),
        "rsa_step_ms": 1e3 / max(rsa_only),
        "key_parse_ms": parse_ms,
        "signature_header_bytes": len(signed) - len(data),
    }
    if theirs:
        result.update({"dkimpy_signatures_per_s": max(theirs), "dkimpy_ms_per_signature": 1e3 / max(theirs),
                       "speedup_vs_dkimpy": max(ours) / max(theirs)})
    return result


if __name__ == "__main__":
    print(measure())
