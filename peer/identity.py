"""The peer's trust material, ``DATA_DIR/identity/``: ``ca.crt``, ``host.crt``, ``host.key``
(0600), ``release-signing.pub``. Installed from a bundle (``shoal-peer enroll``, ``run
--bundle``) or by a join; read at start-up to dial the seeder over mutual TLS."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from common.bundle import Bundle
from common.crypto import certs
from common.errors import ConfigError
from common.tls import ClientTLS

log = logging.getLogger("shoal.peer.identity")

FILES = ("ca.crt", "host.crt", "host.key", "release-signing.pub")


def identity_dir(data_dir: Path) -> Path:
    return data_dir / "identity"


def install(bundle: Bundle, data_dir: Path) -> Path:
    """Write the bundle's files into ``data_dir/identity/`` (each atomically; the key 0600),
    replacing an older identity (a host enrolled again)."""
    directory = identity_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    contents = (bundle.ca, bundle.cert, bundle.key, bundle.release_signing_pub)
    for name, data in zip(FILES, contents, strict=True):
        path = directory / name
        if path.is_file() and path.read_bytes() == data:
            continue
        if name.endswith(".key"):
            certs.write_private(path, data, overwrite=True)
        else:
            certs.write_public(path, data, overwrite=True)
    log.info("identity of host %s installed in %s", bundle.name, directory)
    return directory


@dataclass(frozen=True)
class PeerIdentity:
    name: str  # the host name its certificate names: the only name it may say hello as
    tls: ClientTLS


def load(data_dir: Path) -> PeerIdentity:
    """The host's identity, or ConfigError saying how to enroll it."""
    directory = identity_dir(data_dir)
    missing = [n for n in FILES if not (directory / n).is_file()]
    if missing:
        raise ConfigError(
            f"this host has no identity in {directory} (missing {', '.join(missing)}): enroll"
            " it first: on the seeder `shoal enroll NAME --out FILE`, then here `shoal-peer"
            f" enroll --bundle FILE --data-dir {data_dir}` (or `shoal-peer run --bundle FILE`),"
            " or `shoal-peer join --seeder HOST:PORT --token TOKEN`"
        )
    try:
        cert = certs.load_certificate((directory / "host.crt").read_bytes())
        who = certs.holder(cert)
        ca = (directory / "ca.crt").read_bytes()
    except (OSError, certs.CertificateError) as exc:
        raise ConfigError(f"cannot use the identity in {directory}: {exc}") from None
    if who.role != certs.HOST_ROLE:
        raise ConfigError(f"{directory / 'host.crt'} is a {who.role} certificate, not a host's")
    try:
        tls = ClientTLS(directory / "host.crt", directory / "host.key", ca)
    except certs.CertificateError as exc:
        raise ConfigError(str(exc)) from None
    return PeerIdentity(who.name, tls)
