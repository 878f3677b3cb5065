"""Everything that touches ``cryptography``: certificates and keys (:mod:`.certs`), CSRs and join
tokens, release signatures. No other package imports ``cryptography``."""
