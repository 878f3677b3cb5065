"""Release manifests signed with the seeder's Ed25519 key, and their verification on a peer.

What is signed is :func:`canonical_manifest`: a fixed domain prefix followed by the msgpack
encoding of the manifest map *exactly as it travels* (every key, sorted, at every level). A peer
verifies the map it received, before it reads a single field of it, so no field, known to its
version of shoal or not, can be changed without the signature failing.

Keys are files: the private key as PKCS#8 PEM (mode 0600), the public key as
SubjectPublicKeyInfo PEM. ``cryptography``'s exceptions become :class:`SignatureError` or
:class:`~common.errors.ConfigError` here, once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.errors import ConfigError, ShoalError

# Domain separation: a signature over a manifest can never be replayed as one over anything else.
DOMAIN: Final = b"shoal release manifest v1\x00"
SIGNATURE_SIZE: Final = 64
PRIVATE_KEY_FILE: Final = "release-signing.key"
PUBLIC_KEY_FILE: Final = "release-signing.pub"


class SignatureError(ShoalError):
    """A signature does not verify, is missing, or covers something that cannot be signed."""


@dataclass(frozen=True)
class SigningKeyPair:
    private_pem: bytes  # PKCS#8, unencrypted: the file holding it is mode 0600
    public_pem: bytes  # SubjectPublicKeyInfo


def generate_signing_key() -> SigningKeyPair:
    """A fresh Ed25519 key pair, PEM-encoded (what ``shoal seeder init`` writes)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SigningKeyPair(private, public)


def write_signing_key(directory: Path, pair: SigningKeyPair | None = None) -> SigningKeyPair:
    """Write ``release-signing.key`` (0600, never world-readable, not even for a moment) and
    ``release-signing.pub`` into ``directory``; refuses to overwrite an existing key."""
    pair = pair or generate_signing_key()
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / PRIVATE_KEY_FILE
    try:
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{private} exists already; not replacing a signing key") from None
    with os.fdopen(fd, "wb") as out:
        out.write(pair.private_pem)
    (directory / PUBLIC_KEY_FILE).write_bytes(pair.public_pem)
    return pair


def canonical_manifest(manifest: Mapping[str, Any]) -> bytes:
    """The bytes a manifest signature covers: DOMAIN + msgpack of the map with sorted keys."""
    try:
        body = msgpack.packb(_sorted(manifest), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SignatureError(f"the manifest cannot be signed: {exc}") from None
    return DOMAIN + body


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise SignatureError("a signed manifest's keys must be strings")
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted(v) for v in value]
    if isinstance(value, float):
        raise SignatureError("a signed manifest holds no floats (their encoding is not unique)")
    return value


class Signer:
    """The seeder's private key: signs manifests."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def from_pem(cls, data: bytes, *, source: str = "the signing key") -> Signer:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"{source} is not a PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{source} is not an Ed25519 key")
        return cls(key)

    def sign(self, manifest: Mapping[str, Any]) -> bytes:
        return self._key.sign(canonical_manifest(manifest))

    def verifier(self) -> Verifier:
        return Verifier(self._key.public_key())


class Verifier:
    """A pinned public key: verifies manifest signatures."""

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key

    @classmethod
    def from_pem(cls, data: bytes, *, source: str = "the public key") -> Verifier:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"{source} is not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{source} is not an Ed25519 key")
        return cls(key)

    def verify(self, manifest: Mapping[str, Any], signature: bytes) -> None:
        """Return if ``signature`` is this key's over ``manifest``; else SignatureError."""
        if not signature:
            raise SignatureError("manifest signature missing")
        if len(signature) != SIGNATURE_SIZE:
            raise SignatureError(
                f"manifest signature invalid ({len(signature)} bytes, an Ed25519 one has 64)"
            )
        try:
            self._key.verify(signature, canonical_manifest(manifest))
        except InvalidSignature:
            raise SignatureError(
                "manifest signature invalid (not made by this fleet's release-signing key "
                "over this manifest)"
            ) from None

    def fingerprint(self) -> str:
        """The raw public key in hex (logs and diagnostics)."""
        raw = self._key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return raw.hex()


def load_signer(path: Path) -> Signer:
    """The private key in ``path``; a ConfigError that says how to create it if it is missing."""
    return Signer.from_pem(_read(path, "release-signing key"), source=str(path))


def load_verifier(path: Path) -> Verifier:
    """The public key in ``path``; a ConfigError that says where it comes from if missing."""
    return Verifier.from_pem(_read(path, "release-signing public key"), source=str(path))


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"no {what} at {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
