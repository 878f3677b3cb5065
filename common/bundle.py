"""A host's enrollment bundle: what ``shoal enroll`` writes and ``shoal-peer enroll`` installs.

One JSON file (mode 0600: it holds the host's private key) with the CA certificate, the host's
certificate and key, the release signing public key, and the labels the host was enrolled with.
Installed, it becomes ``PEER_DATA_DIR/identity/`` (``ca.crt``, ``host.crt``, ``host.key``,
``release-signing.pub``), the layout a join token produces too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.crypto import certs
from common.errors import ConfigError

FORMAT = "shoal-host-bundle/1"


@dataclass(frozen=True)
class Bundle:
    name: str
    labels: dict[str, str]
    ca: bytes
    cert: bytes
    key: bytes
    release_signing_pub: bytes

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "format": FORMAT,
            "name": self.name,
            "labels": self.labels,
            "ca": self.ca.decode(),
            "cert": self.cert.decode(),
            "key": self.key.decode(),
            "release_signing_pub": self.release_signing_pub.decode(),
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def read(cls, path: Path) -> Bundle:
        """Load and check a bundle file: the certificate is the CA's, the key is its key."""
        try:
            doc = json.loads(path.read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read the bundle {path}: {exc.strerror}") from None
        except ValueError:
            raise ConfigError(f"{path} is not a shoal host bundle (not JSON)") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ConfigError(f"{path} is not a shoal host bundle (format {FORMAT} expected)")
        try:
            bundle = cls(
                name=str(doc["name"]),
                labels={str(k): str(v) for k, v in dict(doc.get("labels") or {}).items()},
                ca=str(doc["ca"]).encode(),
                cert=str(doc["cert"]).encode(),
                key=str(doc["key"]).encode(),
                release_signing_pub=str(doc["release_signing_pub"]).encode(),
            )
            cert, ca = certs.load_certificate(bundle.cert), certs.load_certificate(bundle.ca)
            key = certs.load_private_key(bundle.key)
            certs.check_signing_public(bundle.release_signing_pub)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"the bundle {path} lacks {exc}") from None
        except certs.CertificateError as exc:
            raise ConfigError(f"the bundle {path} is damaged: {exc}") from None
        if not certs.issued_by(cert, ca) or cert.public_key() != key.public_key():
            raise ConfigError(f"the bundle {path} is damaged: certificate, key and CA disagree")
        if certs.holder(cert) != certs.Holder(bundle.name, certs.HOST_ROLE):
            raise ConfigError(f"the bundle {path} is not a host bundle for {bundle.name!r}")
        return bundle
