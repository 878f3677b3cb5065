"""The seeder's release signatures: every manifest it ships is signed with its release key.

The key is ``DATA/identity/release-signing.key`` (made by ``shoal seeder init``); the seeder does
not start without it. A release is signed right after it is built and the signature is stored
with it (the store's ``signatures`` table); Stage commands carry it. Ed25519 signatures are
deterministic, so a stored signature is derived state: at start-up
:meth:`ReleaseSignatures.reconcile` signs releases stored without one, or with one the current
key did not make (a replaced key).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from common.crypto.signing import PRIVATE_KEY_FILE, SignatureError, Signer, load_signer
from common.errors import ConfigError
from common.release import Manifest
from seeder.store import Store

log = logging.getLogger("shoal.seeder.signatures")

IDENTITY_DIR: Final = "identity"


def signing_key_path(data_dir: Path) -> Path:
    return data_dir / IDENTITY_DIR / PRIVATE_KEY_FILE


def load_release_signer(data_dir: Path) -> Signer:
    """The seeder's release-signing key, or a ConfigError saying how to create it."""
    path = signing_key_path(data_dir)
    if not path.exists():
        raise ConfigError(
            f"no release-signing key at {path}: create the seeder's identity first with "
            f"`shoal seeder init --data-dir {data_dir}`"
        )
    return load_signer(path)


class ReleaseSignatures:
    def __init__(self, store: Store, signer: Signer) -> None:
        self.store = store
        self.signer = signer
        self._verifier = signer.verifier()

    def sign(self, manifest: Manifest) -> bytes:
        """The signature of ``manifest``: over exactly what Stage sends (``to_dict()``)."""
        return self.signer.sign(manifest.to_dict())

    def ensure(self, manifest: Manifest) -> None:
        """Sign and store a newly built release's manifest, unless it is signed already."""
        if self.store.signature(manifest.release_id) is None:
            self.store.set_signature(manifest.release_id, self.sign(manifest))

    def reconcile(self) -> int:
        """Sign every stored release that lacks a valid signature by this key; how many."""
        fixed = 0
        for manifest, _, _ in self.store.releases():
            stored = self.store.signature(manifest.release_id)
            if stored is not None:
                try:
                    self._verifier.verify(manifest.to_dict(), stored)
                    continue
                except SignatureError:
                    pass
            self.store.set_signature(manifest.release_id, self.sign(manifest))
            fixed += 1
        if fixed:
            log.info("signed %d stored release(s) with the current release-signing key", fixed)
        return fixed
