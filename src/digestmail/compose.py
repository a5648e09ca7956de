"""An edition into message bytes (pure): render, build the MIME message, sign.

This is all a build process needs, so it imports only rendering, MIME, tokens and DKIM: not the
store, the index or selection (the build process is part of a run's memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import message, tokens
from .config import parse_address
from .models import Edition, RenderedEmail, Subscriber
from .render import Renderer

if TYPE_CHECKING:
    from .config import Config, RenderSettings, WebSettings


def message_id(edition: Edition, domain: str) -> str:
    return f"{edition.key}@{domain}"


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
        # The text part goes as UTF-8 as it is ("8bit"), not quoted-printable, unless it is signed:
        # RFC 6376 5.3 wants signed bodies 7-bit, since a relay without 8BITMIME would re-encode
        # them and break the signature. (A server without 8BITMIME gets message.seven_bit's.)
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
        return message_id(edition, self.domain)

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
                             list_headers=self.list_headers(url), eight_bit=self.signer is None)
        if self.signer is not None:
            data = self.signer.sign(data, edition.created)  # these exact bytes are sent
        return rendered, data
