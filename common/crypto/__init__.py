"""Everything that touches ``cryptography``: certificates and keys (:mod:`.certs`), CSRs and join
tokens, release signatures (:mod:`.signing`: the Ed25519 manifest signatures a peer verifies
against the public key it was enrolled with). No other package imports ``cryptography``."""
