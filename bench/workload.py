"""Workloads made from the real digests (../shared) when present, else from a built-in vocabulary."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DIGESTMAIL_SHARED", ROOT.parent / "shared"))

_FALLBACK = ("adam optimizer learning rate diffusion model flow matching federated learning privacy "
             "transformer attention graph neural network reinforcement policy robot manipulation "
             "language model reasoning chain of thought benchmark evaluation vision encoder image "
             "generation retrieval augmented memory compression quantization sparse mixture experts").split()


def seed_papers() -> list[tuple[str, str]]:
    """(title, abstract) pairs of the five real trending digests, or synthetic ones without ../shared."""
    digests = SHARED / "digests"
    if digests.is_dir():
        papers: dict[str, str] = {}
        for path in sorted(digests.glob("*.txt")):
            lines = [l.strip() for l in path.read_text(encoding="utf-8").splitlines() if l.strip()][5:]
            papers.update(zip(lines[0::2], lines[1::2]))
        return list(papers.items())
    rng = random.Random(7)
    return [(" ".join(rng.choices(_FALLBACK, k=8)).title(), " ".join(rng.choices(_FALLBACK, k=180)))
            for _ in range(250)]


def hf_days(n_papers: int, per_file: int = 100, seed: int = 1) -> list[bytes]:
    """Hugging Face daily-papers JSON files holding `n_papers` papers with fresh arXiv ids and titles."""
    rng = random.Random(seed)
    base = seed_papers()
    words = vocabulary() or _FALLBACK
    files, items = [], []
    for i in range(n_papers):
        title, abstract = base[i % len(base)]
        if i >= len(base):  # a fresh title: the real one's words reshuffled, with a few others mixed in
            parts = title.split() + rng.sample(words[:300], 2)
            rng.shuffle(parts)
            title = " ".join(parts)
        items.append({"paper": {"id": f"{2400 + i // 90000:04d}.{i % 90000 + 10000:05d}",
                                "title": title, "summary": abstract,
                                "authors": [{"name": f"Author {rng.randrange(5000)}"} for _ in range(4)],
                                "publishedAt": f"2026-11-{1 + (i // per_file) % 20:02d}T00:00:00.000Z",
                                "upvotes": rng.randrange(200)},
                      "title": f"{title} ({i})", "numComments": 0})
        if len(items) == per_file:
            files.append(json.dumps(items).encode())
            items = []
    if items:
        files.append(json.dumps(items).encode())
    return files


def vocabulary() -> list[str]:
    """Words that occur in the papers' titles, most frequent first, for drawing realistic rules."""
    counts: dict[str, int] = {}
    for title, _ in seed_papers():
        for w in title.lower().replace(":", " ").replace(",", " ").split():
            if w.isalpha() and len(w) > 3:
                counts[w] = counts.get(w, 0) + 1
    return sorted(counts, key=lambda w: -counts[w])
