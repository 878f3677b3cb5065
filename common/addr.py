"""HOST:PORT addresses as operators type them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from common.errors import ConfigError


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, *, default_port: int | None = None) -> Address:
        """Parse ``HOST:PORT`` (or ``HOST`` when a default port is given)."""
        host, sep, port_text = text.rpartition(":")
        if not sep:
            if default_port is None:
                raise ConfigError(f"address {text!r} needs a port (HOST:PORT)")
            host, port_text = text, str(default_port)
        host = host.strip("[]")
        if not host:
            raise ConfigError(f"address {text!r} has no host")
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(f"address {text!r}: port {port_text!r} is not a number") from None
        if not 0 <= port <= 65535:
            raise ConfigError(f"address {text!r}: port {port} is out of range")
        return cls(host, port)

    def with_port(self, port: int) -> Address:
        return Address(self.host, port)


def parse_ip(text: str) -> str:
    """Validate an IP literal (used for --bind and torrent listen addresses)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ConfigError(f"{text!r} is not an IP address") from None
