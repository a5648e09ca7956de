"""Render + MIME: complete emails per second (subject, HTML from the compiled MJML, text part, message
bytes) for ~10-paper editions, beside the naive way (MJML compiled per subscriber, EmailMessage)."""

from __future__ import annotations

import email.message
import email.policy
import random
import statistics
import time
from typing import Any

import mjml

from digestmail import collect, message
from digestmail.index import PaperIndex
from digestmail.models import Edition, Pick, Subscriber
from digestmail.render import Renderer
from digestmail.select import Selector, edition_key

from .select import NOW, papers

TOPICS = {"t": "learning OR model OR data"}


def editions(n: int, corpus_size: int = 300, per_email: int = 10) -> tuple[list[Edition], Renderer]:
    corpus = papers(corpus_size)
    selector = Selector(TOPICS, PaperIndex(corpus, NOW.date()), NOW)
    rng = random.Random(5)
    out = []
    for i in range(n):
        sub = Subscriber(email=f"u{i}@example.org", name=f"Reader {i}", topics=("t",), joined_at=NOW)
        picks = tuple(Pick(p, selector.explain(sub, p)) for p in rng.sample(corpus, per_email))
        out.append(Edition(sub, i, picks, NOW, edition_key(sub.email, NOW)))
    return out, Renderer()


def measure(n: int = 2000, naive_sample: int = 100, rounds: int = 3) -> dict[str, Any]:
    """The best of `rounds` rounds, each with a fresh Renderer (its caches start empty every time):
    on a shared machine a neighbour's burst only ever slows a round down. The garbage collector runs
    as in a run (collect.seldom); the naive reference keeps the default, as the obvious stack would."""
    eds, _ = editions(n)
    times = []
    for _ in range(rounds):
        renderer = Renderer()
        start = time.perf_counter()
        total_bytes = 0
        with collect.seldom():  # as a run renders (deliver_all, and a build process)
            for ed in eds:
                r = renderer.render(ed)
                # eight_bit as a run builds it without DKIM (the default): the text part as it is
                # where it can go so (with DKIM it is quoted-printable: the build stage's dkim option).
                data = message.build(r, sender=("Trending Papers", "papers@example.org"),
                                     to=(ed.subscriber.name, ed.subscriber.email),
                                     message_id=f"{ed.key}@example.org", date=ed.created, eight_bit=True)
                total_bytes += len(data)
        times.append(time.perf_counter() - start)
    fast_s = min(times)
    # Naive: Jinja then MJML for every subscriber, and the stdlib EmailMessage.
    source = (renderer.html_source if hasattr(renderer, "html_source") else None)
    naive_start = time.perf_counter()
    for ed in eds[:naive_sample]:
        r = renderer.render(ed)
        if source:
            mjml.mjml2html(source)
        msg = email.message.EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "papers@example.org", ed.subscriber.email, r.subject
        msg.set_content(r.text)
        msg.add_alternative(r.html, subtype="html")
        msg.as_bytes(policy=email.policy.SMTP)
    naive_s = (time.perf_counter() - naive_start) / naive_sample * n
    return {"emails": n, "seconds": fast_s, "emails_per_s": n / fast_s, "mean_bytes": total_bytes // n,
            "rounds": rounds, "median_emails_per_s": n / statistics.median_high(times),
            "naive_emails_per_s": n / naive_s, "speedup_vs_naive": naive_s / fast_s}


if __name__ == "__main__":
    print(measure())
