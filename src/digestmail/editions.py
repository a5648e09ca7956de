"""Editions for one run (no I/O but the ledger lookup): select, render and build each subscriber's email.

The index of candidate papers and the compiled templates are built once per run; each subscriber
then costs a few bitmask operations, one template render and one message build.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from . import message, tokens
from .config import Config, RenderSettings, WebSettings, parse_address
from .index import PaperIndex
from .models import Edition, Paper, Pick, RenderedEmail, Subscriber
from .render import Renderer
from .select import Choice, Selector
from .store import Store


@dataclass(frozen=True)
class Recipe:
    """Everything that turns an edition into message bytes, read once per run; plain values, so a
    build process gets exactly what this one has (the config as loaded, the secrets as read)."""

    sender: str
    render: RenderSettings
    web: WebSettings | None
    web_secret: bytes | None
    dkim: tuple[str, str, bytes] | None  # domain, selector, PEM key

    @classmethod
    def of(cls, config: Config) -> Recipe:
        # Read now, before anything is sent: an unset variable or an unreadable key is a config error (exit 2).
        dkim = config.dkim
        return cls(config.sender, config.render, config.web, config.web.secret() if config.web else None,
                   (dkim.domain, dkim.selector, dkim.key()) if dkim is not None else None)


class Composer:
    """Renders and builds one edition's message (pure): templates compiled and the DKIM key parsed once."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.sender = parse_address(recipe.sender)
        self.domain = self.sender[1].rpartition("@")[2]
        look = recipe.render
        self.renderer = Renderer(look.templates, title=look.title, abstract_chars=look.abstract_chars,
                                 unsubscribe_url=look.unsubscribe_url, manage_url=look.manage_url,
                                 sender_line=f"Sent by {self.sender[0] or self.sender[1]} <{self.sender[1]}>"
                                 if self.sender[0] else f"Sent by {self.sender[1]}")
        self.signer = None
        if recipe.dkim is not None:
            from .dkim import DkimSigner
            self.signer = DkimSigner(*recipe.dkim)

    def list_headers(self, unsubscribe_url: str | None) -> message.ListHeaders:
        """List-Id always; List-Unsubscribe (one-click) when [web] is configured."""
        uris: list[str] = []
        web = self.recipe.web
        if web is not None and unsubscribe_url is not None:
            uris.append(unsubscribe_url)
            if web.unsubscribe_mailto:
                uris.append(f"mailto:{web.unsubscribe_mailto}?subject=unsubscribe")
        return message.ListHeaders(self.renderer.title, f"digest.{self.domain}", tuple(uris))

    def message_id(self, edition: Edition) -> str:
        return f"{edition.key}@{self.domain}"

    def unsubscribe_url(self, sub: Subscriber) -> str | None:
        web, secret = self.recipe.web, self.recipe.web_secret
        if web is None or secret is None:
            return None
        return tokens.unsubscribe_url(web.base_url, secret, sub.email)

    def build(self, edition: Edition) -> tuple[RenderedEmail, bytes]:
        # One signed link per message, for the footer and the List-Unsubscribe header alike.
        url = self.unsubscribe_url(edition.subscriber)
        rendered = self.renderer.render(edition, unsubscribe_url=url)
        data = message.build(rendered, sender=self.sender, to=(edition.subscriber.name, edition.subscriber.email),
                             message_id=self.message_id(edition), date=edition.created,
                             list_headers=self.list_headers(url))
        if self.signer is not None:
            data = self.signer.sign(data, edition.created)  # these exact bytes are sent
        return rendered, data


class Builder:
    """Selects, renders and builds messages for one run (no I/O but the ledger lookup): the index and
    templates are built once, then each subscriber costs a few bitmask operations and one render."""

    def __init__(self, config: Config, papers: list[Paper], now: dt.datetime) -> None:
        self.config = config
        self.now = now
        self.recipe = Recipe.of(config)
        self.composer = Composer(self.recipe)
        self.sender, self.renderer = self.composer.sender, self.composer.renderer
        self.index = PaperIndex(papers, now.date())
        self.first_id = min((p.id for p in papers), default=0)  # the ledger is read from here on
        self.selector = Selector(config.topics, self.index, now)

    @classmethod
    def for_store(cls, config: Config, store: Store, now: dt.datetime) -> Builder:
        """A builder over every paper some active subscriber may still get (the widest window)."""
        return cls(config, store.candidate_papers(store.earliest_window(now)), now)

    def choose(self, store: Store, sid: int, sub: Subscriber) -> Choice:
        """This subscriber's picks now: matching candidates, less what the ledger says they had."""
        mask = self.selector.candidates(sub)
        if not mask:
            return Choice(skipped="no matching papers")
        # Sent, or already in an edition on its way (queued, deferred): never picked twice.
        position = self.index.position
        for paper_id in store.taken_papers(sid, self.first_id):
            at = position.get(paper_id)
            if at is not None:
                mask &= ~(1 << at)
        return self.selector.choose(sub, mask)

    def picks_for(self, sub: Subscriber, papers: Sequence[Paper]) -> tuple[Pick, ...]:
        """The picks of a stored edition, explained again (a retry renders the same papers, in order)."""
        selector = Selector(self.config.topics, PaperIndex(papers, self.now.date()), self.now)
        return tuple(Pick(p, selector.explain(sub, p)) for p in papers)

    def message_id(self, edition: Edition) -> str:
        return self.composer.message_id(edition)

    def build(self, edition: Edition) -> tuple[RenderedEmail, bytes]:
        return self.composer.build(edition)
