"""The ``shoal`` console script: check that the seeder side is installed, then run the CLI.

A peer-only host installs ``shoal`` with ``--no-deps`` and only the peer set of its dependencies
(see pyproject.toml); there ``shoal`` must say what is missing instead of dying of an ImportError
deep in a command.
"""

from __future__ import annotations

import importlib.util
import sys

# Import name -> distribution, for every dependency only the seeder side needs (the peer set is
# the rest of pyproject.toml's dependencies).
SEEDER_ONLY = {
    "h11": "h11",
    "rich": "rich",
    "paramiko": "paramiko",
    "packaging": "packaging",
    "pathspec": "pathspec",
}


def missing_seeder_modules() -> list[str]:
    """The seeder side's distributions that cannot be imported here."""
    return [dist for mod, dist in SEEDER_ONLY.items() if importlib.util.find_spec(mod) is None]


def main(argv: list[str] | None = None) -> int:
    missing = missing_seeder_modules()
    if missing:
        print(
            f"shoal: error: the seeder side of shoal is not installed (missing: "
            f"{', '.join(missing)}); install shoal with its dependencies: pip install shoal"
            " (a peer-only host needs only shoal-peer)",
            file=sys.stderr,
        )
        return 1
    from seeder.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
