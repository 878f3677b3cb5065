"""The seeder's private CA and the certificates it issues, as ``cryptography`` objects and PEM.

Every control connection is mutual TLS with certificates of one CA (see :mod:`common.tls`). A
certificate names who holds it: the subject's common name is the holder (a host "web-23", an
operator "alice", the seeder), its organizational unit the role (``host``, ``admin``,
``deployer``, ``viewer``, ``seeder``). Server certificates carry the names and IPs the seeder
serves as SANs and only the server-auth usage; client certificates only client-auth, so a host's
certificate cannot pose as the seeder.

Keys are ECDSA P-256 (TLS 1.3 in every OpenSSL); the release signing key is Ed25519. Pure logic:
time comes in as ``now``, and nothing here reads or writes files except :func:`write_private`
and :func:`write_public`. Errors in what was loaded are :class:`CertificateError`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import ShoalError

OPERATOR_ROLES = ("admin", "deployer", "viewer")
HOST_ROLE = "host"
SEEDER_ROLE = "seeder"
ROLES = (*OPERATOR_ROLES, HOST_ROLE, SEEDER_ROLE)
CA_LIFETIME = dt.timedelta(days=3650)
DEFAULT_LIFETIME = dt.timedelta(days=365)
_BACKDATE = dt.timedelta(minutes=5)  # tolerate clocks a little behind the CA's

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey


class CertificateError(ShoalError):
    """A certificate, key or credential file is malformed, or does not fit what it is used for."""


@dataclass(frozen=True)
class Holder:
    """Who a certificate names: its subject's common name and role."""

    name: str
    role: str


def generate_key() -> PrivateKey:
    """A new ECDSA P-256 private key (for a TLS certificate)."""
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class Authority:
    """A CA certificate and its private key: issues certificates and revocation lists."""

    cert: x509.Certificate
    key: PrivateKey

    @classmethod
    def create(cls, name: str, now: dt.datetime) -> Authority:
        key = generate_key()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shoal"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> Authority:
        cert, key = load_certificate(cert_pem), load_private_key(key_pem)
        if cert.public_key() != key.public_key():
            raise CertificateError("the CA key does not belong to the CA certificate")
        return cls(cert, key)

    def issue(
        self,
        public_key: PublicKey,
        name: str,
        role: str,
        *,
        now: dt.datetime,
        not_after: dt.datetime | None = None,
        hosts: Iterable[str] = (),
    ) -> x509.Certificate:
        """A certificate for ``public_key`` naming ``name`` in ``role``.

        ``role`` ``seeder`` makes a server certificate whose SANs are ``hosts`` (DNS names or IP
        addresses); every other role makes a client certificate. ``not_after`` defaults to a year
        from ``now`` and never outlives the CA."""
        check_name(name)
        if role not in ROLES:
            raise CertificateError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise CertificateError("only ECDSA keys can be certified for TLS here")
        end = min(not_after or now + DEFAULT_LIFETIME, self.cert.not_valid_after_utc)
        server = role == SEEDER_ROLE
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shoal"),
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                        x509.NameAttribute(NameOID.COMMON_NAME, name),
                    ]
                )
            )
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(min(now - _BACKDATE, end))
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server:
            sans = [_san(h) for h in dict.fromkeys(hosts)]
            if not sans:
                raise CertificateError("a server certificate needs at least one name or IP")
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def revocation_list(
        self, serials: Iterable[int], now: dt.datetime, *, valid_for: dt.timedelta = CA_LIFETIME
    ) -> x509.CertificateRevocationList:
        """A CRL revoking ``serials``, signed by this CA (TLS servers load it to refuse them)."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - _BACKDATE)
            .next_update(now + valid_for)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        for serial in sorted(set(serials)):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - _BACKDATE)
                .build()
            )
        return builder.sign(self.key, hashes.SHA256())

    def issued(self, cert: x509.Certificate) -> bool:
        """Whether this CA signed ``cert``."""
        return issued_by(cert, self.cert)


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether the CA certificate ``ca`` signed ``cert``."""
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def holder(cert: x509.Certificate) -> Holder:
    """The name and role a certificate was issued to (CertificateError if it names neither)."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    roles = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(names) != 1 or len(roles) != 1:
        raise CertificateError(f"certificate {cert.subject.rfc4514_string()} names no shoal role")
    return Holder(str(names[0].value), str(roles[0].value))


def check_name(name: str) -> str:
    """A holder name: 1-253 printable characters without spaces, commas or slashes."""
    if not 0 < len(name) <= 253 or not name.isprintable() or any(c in name for c in " ,/\\"):
        raise CertificateError(
            f"{name!r} is not a usable name (1-253 printable characters, no spaces, commas or"
            " slashes)"
        )
    return name


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not host or any(c in host for c in " /*") or not host.isascii():
        raise CertificateError(f"{host!r} is neither an IP address nor a DNS name")
    return x509.DNSName(host.lower())


# --- PEM ---------------------------------------------------------------------------------------


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM (the file holding it is mode 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: PublicKey | ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_certificate(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate: {exc}") from None


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertificateError(f"no PEM certificate: {exc}") from None


def load_private_key(pem: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError("the private key is not an ECDSA key")
    return key


def load_public_key(pem: bytes) -> PublicKey:
    """An ECDSA public key from PEM (what a CSR or an ``admin cert`` request carries)."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertificateError("the public key is not an ECDSA key")
    return key


def generate_signing_key() -> tuple[bytes, bytes]:
    """A new Ed25519 release signing key pair: (private PKCS#8 PEM, public SPKI PEM)."""
    key = ed25519.Ed25519PrivateKey.generate()
    return key_pem(key), public_pem(key.public_key())


def check_signing_public(pem: bytes) -> bytes:
    """``pem`` if it is an Ed25519 public key (the release signing key), else CertificateError."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"the release signing key is not a PEM public key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise CertificateError("the release signing key is not an Ed25519 key")
    return pem


# --- credentials: one PEM file with a certificate, its key and the CA ----------------------------


@dataclass(frozen=True)
class Credential:
    """What a TLS client presents and trusts: its certificate and key, and the CA certificate."""

    cert: x509.Certificate
    key: PrivateKey
    ca: x509.Certificate

    def to_pem(self) -> bytes:
        """The credential file: the certificate, then the CA, then the key (OpenSSL reads the
        certificate chain and the key from it as they are)."""
        who = holder(self.cert)
        head = f"# shoal credential: {who.name} ({who.role})\n".encode()
        return head + cert_pem(self.cert) + cert_pem(self.ca) + key_pem(self.key)

    @classmethod
    def from_pem(cls, pem: bytes) -> Credential:
        certs = load_certificates(pem)
        key = load_private_key(pem)
        leaves = [c for c in certs if c.public_key() == key.public_key()]
        cas = [c for c in certs if _is_ca(c)]
        if len(leaves) != 1 or len(cas) != 1:
            raise CertificateError(
                "a credential file holds one certificate with its key and one CA certificate"
            )
        credential = cls(leaves[0], key, cas[0])
        if not issued_by(leaves[0], cas[0]):
            raise CertificateError("the credential's certificate was not issued by its CA")
        holder(leaves[0])
        return credential


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


# --- files -------------------------------------------------------------------------------------


def write_private(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write a secret file atomically, mode 0600 from its first byte; never over another file
    unless ``overwrite``."""
    _write(path, data, 0o600, overwrite)


def write_public(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write a certificate or public key atomically, mode 0644."""
    _write(path, data, 0o644, overwrite)


def _write(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise CertificateError(f"{path} already exists; not overwriting it")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if something appeared meanwhile
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
