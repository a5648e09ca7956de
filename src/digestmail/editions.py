"""Editions for one run (no I/O but the ledger lookup): select, render and build each subscriber's email.

The index of candidate papers and the compiled templates are built once per run; each subscriber
then costs a few bitmask operations, one template render and one message build. Rendering and
building are compose.py's (Recipe, Composer), which a build process imports without all this.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from .compose import Composer, Recipe, message_id
from .config import Config
from .index import PaperIndex
from .models import Edition, Paper, Pick, RenderedEmail, Subscriber
from .select import Choice, Selector
from .store import Store

__all__ = ["Builder", "Composer", "Recipe"]


class Builder:
    """Selects, renders and builds messages for one run (no I/O but the ledger lookup): the index and
    templates are built once, then each subscriber costs a few bitmask operations and one render."""

    def __init__(self, config: Config, papers: list[Paper], now: dt.datetime) -> None:
        self.config = config
        self.now = now
        self.recipe = Recipe.of(config)
        # Made now: a broken template is a config error before anything is sent.
        self._composer: Composer | None = Composer(self.recipe)
        self.sender, self.domain = self._composer.sender, self._composer.domain
        self.index = PaperIndex(papers, now.date())
        self.first_id = min((p.id for p in papers), default=0)  # the ledger is read from here on
        self.selector = Selector(config.topics, self.index, now)

    @classmethod
    def for_store(cls, config: Config, store: Store, now: dt.datetime) -> Builder:
        """A builder over every paper some active subscriber may still get (the widest window)."""
        return cls(config, store.candidate_papers(store.earliest_window(now)), now)

    def choose(self, store: Store, sid: int, sub: Subscriber, taken: Iterable[int] | None = None) -> Choice:
        """This subscriber's picks now: matching candidates, less what the ledger says they had
        (`taken`, when looked up already for a batch: Store.taken_papers_of from `first_id`)."""
        mask = self.selector.candidates(sub)
        if not mask:
            return Choice(skipped="no matching papers")
        # Sent, or already in an edition on its way (queued, deferred): never picked twice.
        position = self.index.position
        for paper_id in store.taken_papers(sid, self.first_id) if taken is None else taken:
            at = position.get(paper_id)
            if at is not None:
                mask &= ~(1 << at)
        return self.selector.choose(sub, mask)

    def picks_for(self, sub: Subscriber, papers: Sequence[Paper]) -> tuple[Pick, ...]:
        """The picks of a stored edition, explained again (a retry renders the same papers, in order)."""
        selector = Selector(self.config.topics, PaperIndex(papers, self.now.date()), self.now)
        return tuple(Pick(p, selector.explain(sub, p)) for p in papers)

    @property
    def composer(self) -> Composer:
        if self._composer is None:
            self._composer = Composer(self.recipe)
        return self._composer

    def release(self) -> None:
        """Let go of the templates and the rendering caches while build processes do the building
        (the first emails of a run fill those caches here; a later build here starts them afresh)."""
        self._composer = None

    def message_id(self, edition: Edition) -> str:
        return message_id(edition, self.domain)

    def build(self, edition: Edition) -> tuple[RenderedEmail, bytes]:
        return self.composer.build(edition)
