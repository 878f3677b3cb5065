"""Certificate signing requests: made on the joining host, checked on the seeder.

The host generates its key and sends only a CSR (its public key and the name it asks for, signed
by the key); the private key never leaves the host. The seeder reads the CSR with
:func:`read_csr`, which checks the signature (the sender holds the key), that the subject is
exactly ``CN=<the name it joins as>``, and that the key is of a kind and size we accept. Errors
are :class:`CsrError`, the sender's fault.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.crypto import certs
from common.errors import ShoalError

MAX_CSR_BYTES = 8 * 1024  # a P-256 CSR is ~400 bytes
_CURVES = (ec.SECP256R1, ec.SECP384R1)  # ECDSA, as every shoal TLS certificate (crypto.certs)


class CsrError(ShoalError):
    """A CSR that cannot be used: unreadable, badly signed, another name, a weak key."""


def make_csr(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    """A PEM CSR asking for a certificate with subject ``CN=name`` for ``key``'s public half
    (the key comes from :func:`common.crypto.certs.generate_key`, on the host)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CheckedCsr:
    name: str
    public_key: ec.EllipticCurvePublicKey


def read_csr(pem: bytes, *, name: str) -> CheckedCsr:
    """The CSR's public key, if it is a well-signed request for exactly ``CN=name``."""
    if len(pem) > MAX_CSR_BYTES:
        raise CsrError(f"the CSR is {len(pem)} bytes; at most {MAX_CSR_BYTES} are accepted")
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise CsrError(f"the CSR is not a PEM certificate request ({exc})") from None
    if not csr.is_signature_valid:
        raise CsrError("the CSR's signature does not verify (not signed by its own key)")
    attrs = list(csr.subject)
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(attrs) != 1 or len(cns) != 1:
        raise CsrError(
            f"the CSR's subject must be just CN=<host name>, not {csr.subject.rfc4514_string()!r}"
        )
    cn = cns[0].value
    if cn != name:
        raise CsrError(f"the CSR asks for the name {cn!r} but the host joins as {name!r}")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CsrError(f"the CSR's key is {type(key).__name__}; an ECDSA P-256 key is expected")
    if not isinstance(key.curve, _CURVES):
        raise CsrError(f"the CSR's key is on curve {key.curve.name}; use P-256 or P-384")
    return CheckedCsr(name, key)


def check_issued(
    cert_pem: bytes, ca_pem: bytes, key: ec.EllipticCurvePrivateKey, name: str
) -> None:
    """The joining host's check of its new certificate: issued by the pinned CA, for its own key
    (the one that never left it), naming it as a host. CsrError (the seeder's fault) if not."""
    try:
        cert, ca = certs.load_certificate(cert_pem), certs.load_certificate(ca_pem)
        who = certs.holder(cert)
    except certs.CertificateError as exc:
        raise CsrError(f"the seeder sent an unusable certificate: {exc}") from None
    if not certs.issued_by(cert, ca):
        raise CsrError("the seeder sent a certificate that its CA did not issue")
    if cert.public_key() != key.public_key():
        raise CsrError("the seeder sent a certificate for another key than the one in the CSR")
    if (who.name, who.role) != (name, certs.HOST_ROLE):
        raise CsrError(
            f"the seeder's certificate names {who.name!r} ({who.role}), not host {name!r}"
        )
