"""Join tokens, CSRs and the token policy: pure logic, no sockets."""

from __future__ import annotations

import hmac
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.crypto.certs import generate_key
from common.crypto.csr import CsrError, make_csr, read_csr
from common.crypto.tokens import (
    JoinToken,
    TokenFormatError,
    ca_pin,
    new_token,
    secret_digest,
    secret_matches,
)
from common.join import JoinError, RefusalCode
from seeder.join_policy import TokenRecord, check_join, joined_labels

PIN = "ab" * 32


def _self_signed(key: ec.EllipticCurvePrivateKey) -> bytes:
    import datetime as dt

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_token_round_trips_and_hides_its_secret() -> None:
    token = new_token(PIN)
    text = str(token)
    assert text.startswith("shoal1.") and text.count(".") == 3
    assert JoinToken.parse(text) == token
    assert JoinToken.parse("  " + text.upper() + "\n") == token  # pasted, shouted
    assert token.secret not in repr(token)
    assert new_token(PIN).secret != token.secret


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "4 dot-separated parts"),
        ("abcdef.0123456789abcdef", "4 dot-separated parts"),
        ("kube1.aaaaaaaaaaaa." + "b" * 32 + "." + PIN, "not 'kube1'"),
        ("shoal1.xyz." + "b" * 32 + "." + PIN, "the id must be 12 hex digits"),
        ("shoal1.aaaaaaaaaaaa." + "b" * 31 + "." + PIN, "the secret must be 32 hex digits"),
        ("shoal1.aaaaaaaaaaaa." + "b" * 32 + "." + PIN[:-1], "the CA pin must be 64"),
    ],
)
def test_malformed_tokens_are_refused_by_name(text: str, needle: str) -> None:
    with pytest.raises(TokenFormatError, match=needle) as caught:
        JoinToken.parse(text)
    assert "b" * 31 not in str(caught.value)  # the secret is never echoed


def test_pin_is_the_sha256_of_the_spki_as_openssl_computes_it(tmp_path: Path) -> None:
    pem = _self_signed(ec.generate_private_key(ec.SECP256R1()))
    (tmp_path / "ca.crt").write_bytes(pem)
    pubkey = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout", "-in", str(tmp_path / "ca.crt")],
        capture_output=True,
        check=True,
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"],
        input=pubkey,
        capture_output=True,
        check=True,
    ).stdout
    digest = subprocess.run(["sha256sum"], input=der, capture_output=True, check=True).stdout
    assert ca_pin(pem) == digest.split()[0].decode()
    other = _self_signed(ec.generate_private_key(ec.SECP256R1()))
    assert ca_pin(other) != ca_pin(pem)


def test_secret_is_stored_as_a_digest() -> None:
    digest = secret_digest("00" * 16)
    assert "00" * 16 not in digest
    assert secret_matches("00" * 16, digest)
    assert not secret_matches("01" + "00" * 15, digest)


def test_csr_carries_the_public_key_only_and_its_name() -> None:
    key = generate_key()
    csr = make_csr(key, "web-1")
    assert b"PRIVATE" not in csr
    checked = read_csr(csr, name="web-1")
    assert checked.public_key == key.public_key()
    with pytest.raises(CsrError, match="asks for the name 'web-1' but the host joins as 'web-2'"):
        read_csr(csr, name="web-2")


def test_csr_problems_are_named() -> None:
    with pytest.raises(CsrError, match="not a PEM certificate request"):
        read_csr(b"hello", name="web-1")
    with pytest.raises(CsrError, match="at most"):
        read_csr(b"x" * 100_000, name="web-1")
    key = ec.generate_private_key(ec.SECP256R1())
    two_part = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "admin"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "web-1"),
                ]
            )
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(CsrError, match="must be just CN=<host name>"):
        read_csr(two_part, name="web-1")
    weak = ec.generate_private_key(ec.SECP256K1())
    other_curve = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web-1")]))
        .sign(weak, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(CsrError, match="curve secp256k1"):
        read_csr(other_curve, name="web-1")


def test_csr_signed_by_another_key_is_refused() -> None:
    """A CSR whose public key was swapped: the signature no longer verifies."""
    good = x509.load_pem_x509_csr(make_csr(generate_key(), "web-1"))
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0xFF  # inside the signature
    bad = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CsrError, match="signature does not verify"):
        read_csr(bad, name="web-1")


def _record(**kw: object) -> TokenRecord:
    base: dict[str, object] = {
        "token_id": "aaaaaaaaaaaa",
        "digest": secret_digest("11" * 16),
        "created_at": 100.0,
        "expires_at": 200.0,
        "uses": 2,
        "uses_left": 2,
    }
    base.update(kw)
    return TokenRecord(**base)  # type: ignore[arg-type]


def _refusal(record: TokenRecord | None, secret: str = "11" * 16, name: str = "web-1") -> str:
    with pytest.raises(JoinError) as caught:
        check_join(record, secret, name, now=150.0)
    return caught.value.code


def test_token_policy() -> None:
    check_join(_record(), "11" * 16, "web-1", now=150.0)  # good: no error
    assert _refusal(None) == RefusalCode.BAD_TOKEN
    assert _refusal(_record(), secret="22" * 16) == RefusalCode.BAD_TOKEN
    assert _refusal(_record(expires_at=150.0)) == RefusalCode.EXPIRED
    assert _refusal(_record(uses_left=0)) == RefusalCode.USED_UP
    assert _refusal(_record(revoked_at=120.0)) == RefusalCode.REVOKED
    assert _refusal(_record(name_pattern="db-*")) == RefusalCode.NAME_REFUSED
    check_join(_record(name_pattern="web-*"), "11" * 16, "web-1", now=150.0)


def test_an_unknown_id_and_a_wrong_secret_cost_the_same_comparison(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The secret is checked with hmac.compare_digest (constant time), and an unknown token id
    goes through the same digest and comparison: the answer's timing tells neither apart."""
    compared: list[tuple[str, str]] = []

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return a == b

    monkeypatch.setattr(hmac, "compare_digest", spy)
    for record in (None, _record()):
        _refusal(record, secret="22" * 16)
    assert len(compared) == 2
    assert compared[0][0] == compared[1][0] == secret_digest("22" * 16)


def test_token_policy_tells_nothing_to_a_wrong_secret() -> None:
    """An expired token probed with a wrong secret says 'invalid', not 'expired'."""
    assert _refusal(_record(expires_at=0.0), secret="22" * 16) == RefusalCode.BAD_TOKEN


def test_token_labels_win_over_the_hosts() -> None:
    record = _record(labels={"env": "prod"})
    assert joined_labels(record, {"env": "dev", "rack": "r1"}) == {"env": "prod", "rack": "r1"}
    with pytest.raises(JoinError, match="label key"):
        joined_labels(record, {"bad key": "x"})
    with pytest.raises(JoinError, match="at most 32"):
        joined_labels(record, {f"k{i}": "v" for i in range(33)})


def test_token_view_has_no_digest() -> None:
    view = _record().view(now=150.0)
    assert "digest" not in view and view["state"] == "active"
    assert _record().view(now=250.0)["state"] == "expired"


def test_the_last_use_goes_to_exactly_one_of_two_store_connections(tmp_path: Path) -> None:
    """Two writers on one database (as two seeder processes would be) race for the last use."""
    import threading

    from seeder.store import Store

    first, second = Store(tmp_path / "s.db"), Store(tmp_path / "s.db")
    try:
        first.add_token(_record(uses=1, uses_left=1, expires_at=1e12))
        barrier = threading.Barrier(2)
        won: list[bool] = []

        def race(store: Store) -> None:
            barrier.wait()
            won.append(store.take_token_use("aaaaaaaaaaaa", now=150.0))

        threads = [threading.Thread(target=race, args=(s,)) for s in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(won) == [False, True]
        assert first.token("aaaaaaaaaaaa").uses_left == 0  # type: ignore[union-attr]
        first.give_token_use_back("aaaaaaaaaaaa")
        first.give_token_use_back("aaaaaaaaaaaa")  # never more than it had
        assert second.token("aaaaaaaaaaaa").uses_left == 1  # type: ignore[union-attr]
    finally:
        first.close()
        second.close()


def test_join_port_follows_the_control_port() -> None:
    from common.addr import Address
    from common.errors import ConfigError
    from seeder.service import SeederConfig, join_address

    def config(listen: str, **kw: Address) -> SeederConfig:
        return SeederConfig(data_dir=Path("/nonexistent"), listen=Address.parse(listen), **kw)

    assert join_address(config("10.0.0.1:7700")) == Address("10.0.0.1", 7703)
    moved = config("10.0.0.1:7700", join_listen=Address("0.0.0.0", 9000))
    assert join_address(moved) == Address("0.0.0.0", 9000)
    assert join_address(config("127.0.0.1:0")) == Address("127.0.0.1", 0)
    with pytest.raises(ConfigError, match="pass --join-listen explicitly"):
        join_address(config("10.0.0.1:65533"))
