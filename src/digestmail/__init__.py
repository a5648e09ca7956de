"""digestmail: paper digests in, one personalised email per subscriber out, never a paper twice."""

from .config import Config, load_config
from .errors import ConfigError, DigestError, DigestmailError, RuleError, StoreError


def __getattr__(name: str) -> str:
    # Looked up when asked for: importlib.metadata costs every start (the build processes' too) ~15 ms.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("digestmail")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


__all__ = ["Config", "ConfigError", "DigestError", "DigestmailError", "RuleError", "StoreError",
           "__version__", "load_config"]
