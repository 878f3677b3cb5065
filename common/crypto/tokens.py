"""Join tokens: what an operator hands a new host so it can enroll itself, and how they are kept.

A token reads ``shoal1.<token-id>.<secret>.<ca-pin>``:

- ``token-id`` (12 hex digits) names the token in ``shoal token list`` and the seeder's store;
- ``secret`` (32 hex digits, 128 random bits) proves the holder was given the token; the seeder
  keeps only its SHA-256, so a copy of the seeder's database enrolls nobody;
- ``ca-pin`` is the SHA-256 of the seeder CA certificate's DER SubjectPublicKeyInfo, as kubeadm's
  ``--discovery-token-ca-cert-hash``: the joining host accepts only a seeder whose CA has exactly
  this public key, so the first connection cannot be intercepted.

The secret is high-entropy and random, so one SHA-256 is enough (no password KDF): there is
nothing to guess from a dictionary.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from common.errors import ConfigError

PREFIX = "shoal1"
_ID = re.compile(r"[0-9a-f]{12}")
_SECRET = re.compile(r"[0-9a-f]{32}")
_PIN = re.compile(r"[0-9a-f]{64}")


class TokenFormatError(ConfigError):
    """A string that is not a shoal join token (the message never repeats the secret)."""


@dataclass(frozen=True)
class JoinToken:
    token_id: str
    secret: str
    ca_pin: str

    def __str__(self) -> str:
        return f"{PREFIX}.{self.token_id}.{self.secret}.{self.ca_pin}"

    def __repr__(self) -> str:  # never print the secret by accident (logs, tracebacks)
        return f"JoinToken(token_id={self.token_id!r}, ca_pin={self.ca_pin[:16]}...)"

    @classmethod
    def parse(cls, text: str) -> JoinToken:
        parts = text.strip().lower().split(".")
        expected = f"expected {PREFIX}.<id>.<secret>.<ca-pin>"
        if len(parts) != 4:
            raise TokenFormatError(
                f"not a shoal join token: {expected} (4 dot-separated parts), got {len(parts)}"
            )
        if parts[0] != PREFIX:
            raise TokenFormatError(f"not a shoal join token: {expected}, not {parts[0][:8]!r}...")
        _, token_id, secret, pin = parts
        for what, value, pattern, size in (
            ("id", token_id, _ID, 12),
            ("secret", secret, _SECRET, 32),
            ("CA pin", pin, _PIN, 64),
        ):
            if not pattern.fullmatch(value):
                raise TokenFormatError(
                    f"join token: the {what} must be {size} hex digits"
                    f" (got {len(value)} characters)"
                )
        return cls(token_id, secret, pin)


def new_token(ca_pin_hex: str) -> JoinToken:
    """A fresh token for the CA whose pin is given."""
    return JoinToken(secrets.token_hex(6), secrets.token_hex(16), ca_pin_hex)


def secret_digest(secret: str) -> str:
    """What the seeder stores in place of the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, digest: str) -> bool:
    """Whether ``secret`` is the one ``digest`` was made from (constant time)."""
    return hmac.compare_digest(secret_digest(secret), digest)


def ca_pin(ca_cert_pem: bytes) -> str:
    """SHA-256 (hex) of the certificate's DER SubjectPublicKeyInfo: what a token pins.

    The same value as ``openssl x509 -pubkey -noout -in ca.crt | openssl pkey -pubin -outform
    der | sha256sum``. Raises ValueError if ``ca_cert_pem`` is not one PEM certificate."""
    cert = x509.load_pem_x509_certificate(ca_cert_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()
