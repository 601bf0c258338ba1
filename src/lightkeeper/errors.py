"""Every error lightkeeper raises on purpose.

    LightkeeperError                 root: catch this to catch everything we raise
    ├── ConfigError                  a setting is missing or malformed (exit code 2)
    │   └── InputError               stock input that cannot be sent (exit code 2; nothing was sent)
    │       └── StockUnsupported     update-stock on a provider without our stock API (X-Series)
    ├── DecryptError                 tampered ciphertext, or made for another row or field
    │   └── UnknownKey               made with a key that is not configured (a config fault)
    ├── StoreError                   the database cannot be used as it is
    │   └── SchemaOutOfDate          the database is behind the code's migrations
    ├── ConnectionNotFound           no connection with that id
    ├── EventNotFound                no webhook event with that id
    ├── EventBusy                    another process is sending that webhook event right now
    ├── ConnectionExpired            the merchant must reconnect (status ``expired``/``disconnected``)
    ├── ConnectFlowError             a bad OAuth callback (forged/reused/expired state, denied, no code)
    ├── InvalidPath                  a proxy path that could lead outside the connection's account
    └── ProviderError                Lightspeed said no, or could not be reached
        ├── InvalidGrant             400 invalid_grant: the code or refresh token is dead
        ├── InvalidClient            401 invalid_client: our client id/secret is wrong (a config fault)
        ├── AccessDenied             401 access_denied on an API call: the access token is not valid
        ├── RateLimited              429; ``retry_after`` in seconds
        ├── ProviderUnavailable      5xx, timeout, connection reset: transient
        │   └── ProviderTimeout      no answer within the deadline
        └── ProviderProtocolError    an answer we cannot understand, or another OAuth error

Messages never contain a token, a secret or a key: they are shown to users and written to run records.
"""

from __future__ import annotations


class LightkeeperError(Exception):
    """Root of every error lightkeeper raises on purpose."""


class ConfigError(LightkeeperError):
    """A setting is missing or malformed."""


class InputError(ConfigError):
    """Stock input that cannot be sent (exit code 2: fix the file, nothing was sent)."""


class StockUnsupported(InputError):
    """The connection's provider has no stock API of ours (X-Series): nothing was sent; use the proxy."""


class DecryptError(LightkeeperError):
    """A ciphertext cannot be decrypted with the configured keys."""


class UnknownKey(DecryptError):
    """The ciphertext was made with a key that is not configured: a configuration fault."""


class StoreError(LightkeeperError):
    """The database cannot be used as it is."""


class SchemaOutOfDate(StoreError):
    """The database schema is behind the code's migrations."""


class ConnectionNotFound(LightkeeperError):
    """No connection has the given id."""


class EventNotFound(LightkeeperError):
    """No webhook event has the given id."""


class EventBusy(LightkeeperError):
    """Another process holds the webhook event's delivery lease: it is being sent right now."""


class ConnectionExpired(LightkeeperError):
    """The connection's refresh token is dead: the merchant must reconnect."""


class ConnectFlowError(LightkeeperError):
    """A bad OAuth callback: forged, reused or expired state, denied access, missing code."""

    def __init__(self, message: str, *, code: str = "invalid_callback") -> None:
        super().__init__(message)
        #: A stable, machine-readable reason; the web layer maps it to an HTTP status.
        self.code = code


class InvalidPath(LightkeeperError):
    """A path given to the API proxy that could lead outside the connection's account: nothing is sent."""


class ProviderError(LightkeeperError):
    """Lightspeed refused a request or could not be reached."""

    #: Whether retrying later may succeed with the same tokens.
    transient = False


class InvalidGrant(ProviderError):
    """The authorization code or refresh token is invalid, expired or revoked."""


class InvalidClient(ProviderError):
    """Lightspeed rejected our client id or secret: a configuration fault, never the merchant's."""


class AccessDenied(ProviderError):
    """An API call was refused because the access token could not be verified."""


class RateLimited(ProviderError):
    """Lightspeed answered 429."""

    transient = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    """A 5xx, a timeout or a broken connection: try again later."""

    transient = True


class ProviderTimeout(ProviderUnavailable):
    """Lightspeed did not answer (or paused its answer) for longer than the deadline."""


class ProviderProtocolError(ProviderError):
    """An answer we cannot understand, or an OAuth error we do not expect."""

    transient = True


__all__ = [
    "AccessDenied",
    "ConfigError",
    "ConnectFlowError",
    "ConnectionExpired",
    "ConnectionNotFound",
    "DecryptError",
    "EventBusy",
    "EventNotFound",
    "InputError",
    "InvalidClient",
    "InvalidGrant",
    "InvalidPath",
    "LightkeeperError",
    "ProviderError",
    "ProviderProtocolError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "SchemaOutOfDate",
    "StockUnsupported",
    "StoreError",
    "UnknownKey",
]
