"""digestmail: paper digests in, one personalised email per subscriber out, never a paper twice."""

from importlib.metadata import PackageNotFoundError, version

from .config import Config, load_config
from .errors import ConfigError, DigestError, DigestmailError, RuleError, StoreError

try:
    __version__ = version("digestmail")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["Config", "ConfigError", "DigestError", "DigestmailError", "RuleError", "StoreError",
           "__version__", "load_config"]
