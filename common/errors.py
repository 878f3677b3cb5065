"""The errors shoal raises, split by whose fault they are.

Following h11: a ``LocalProtocolError`` means *we* tried to do something the protocol forbids (a
bug on our side); a ``RemoteProtocolError`` means the other end sent something invalid. Outside
libraries' exceptions are translated into these once, in the module that owns the library.
"""

from __future__ import annotations


class ShoalError(Exception):
    """Base of every error shoal raises on purpose; its message is shown to operators."""


class ProtocolError(ShoalError):
    """The control channel cannot continue: the connection must be closed."""


class LocalProtocolError(ProtocolError):
    """We tried to send something the control protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The remote end sent bytes or a message the control protocol does not allow."""


class ConnectionClosed(ShoalError):
    """The control connection ended (cleanly or not) while we were using it."""


class RemoteError(ShoalError):
    """The seeder answered a request with an error (e.g. unknown release)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ConfigError(ShoalError):
    """Bad operator input: an address, an option, a file."""


class AppSpecError(ShoalError):
    """The release's appspec.yml is missing or does not follow the CodeDeploy format."""


class BuildError(ShoalError):
    """A release could not be built from the given repository and ref."""


class TorrentError(ShoalError):
    """libtorrent reported a failure (translated from its own exceptions and error alerts)."""


class ReleaseError(ShoalError):
    """A downloaded release does not verify or cannot be unpacked."""


class TLSRefused(ConnectionClosed):
    """A TLS handshake failed. ``ours`` says whose fault: True when the remote end refused what
    we presented (our certificate is unknown, expired or revoked), False when we refused the
    remote's (no certificate, another CA, a name that does not match)."""

    def __init__(self, message: str, *, ours: bool) -> None:
        super().__init__(message)
        self.ours = ours
