"""The one package that uses ``cryptography``: keys, certificates, CSRs, join tokens, signatures."""
