"""The one exception tree of digestmail; every error says what, where and what to do.

    DigestmailError                 base: message + where + hint, exit code 2 unless said otherwise
    ├── ConfigError                 the TOML file, the subscribers CSV, an environment variable
    ├── RuleError                   a topic rule that does not parse (carries the column)
    ├── DigestError                 one input file that is not a digest we can read (exit 1: partial)
    ├── SourceError                 a source (an IMAP server) that cannot be read now (exit 1: partial)
    ├── StoreError                  the SQLite file cannot be opened or migrated
    ├── HeaderError (ValueError)    a value that would break or inject a mail header
    └── DeliveryError               a transport could not hand a message over
"""

from __future__ import annotations


class DigestmailError(Exception):
    """Base of every error digestmail reports to a user."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class ConfigError(DigestmailError):
    """The configuration (file, key or environment) is wrong."""


class RuleError(DigestmailError):
    """A topic rule does not parse; `column` is 1-based within `rule`."""

    def __init__(self, message: str, *, rule: str, column: int, where: str | None = None,
                 hint: str | None = None) -> None:
        self.rule = rule
        self.column = column
        caret = f"\n    {rule}\n    {' ' * (column - 1)}^"
        super().__init__(f"column {column}: {message}{caret}", where=where, hint=hint)


class DigestError(DigestmailError):
    """One input file cannot be read as a digest; the others still land."""

    exit_code = 1


class SourceError(DigestmailError):
    """A source cannot be read this time (server down, connection dropped); the other sources still run."""

    exit_code = 1


class StoreError(DigestmailError):
    """The store cannot be opened, migrated or written."""


class HeaderError(DigestmailError, ValueError):
    """A value that would put CR/LF or another control character into a mail header."""


class DeliveryError(DigestmailError):
    """A transport failed to hand a message over.

    `permanent` (a 5xx to the message) means never retry it; `refused` (a 5xx to the recipient at
    RCPT) also means never send to that address again. Anything else is retried later.
    """

    exit_code = 1

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None,
                 permanent: bool = False, refused: bool = False, code: int | None = None) -> None:
        super().__init__(message, where=where, hint=hint)
        self.permanent = permanent or refused
        self.refused = refused
        self.code = code
