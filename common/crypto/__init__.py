"""The one package that imports ``cryptography``: keys, certificates and signatures.

- :mod:`.signing`: the seeder's Ed25519 release-signing key and the manifest signatures made
  with it (a peer verifies them against the public key it was enrolled with)
"""
