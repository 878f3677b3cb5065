"""The ``shoal`` console script: check that the seeder side is installed, then run the CLI.

A peer-only host installs ``shoal`` without the ``seeder`` extra (see pyproject.toml); there
``shoal`` must say which extra is missing instead of dying of an ImportError deep in a command.
"""

from __future__ import annotations

import importlib.util
import sys

# Import name -> distribution, for every dependency of the `seeder` extra.
SEEDER_EXTRA = {"h11": "h11", "rich": "rich", "paramiko": "paramiko", "packaging": "packaging"}


def missing_seeder_modules() -> list[str]:
    """The distributions of the seeder extra that cannot be imported here."""
    return [dist for mod, dist in SEEDER_EXTRA.items() if importlib.util.find_spec(mod) is None]


def main(argv: list[str] | None = None) -> int:
    missing = missing_seeder_modules()
    if missing:
        print(
            f"shoal: error: the seeder side of shoal is not installed (missing: "
            f"{', '.join(missing)}); install it with: pip install 'shoal[seeder]'"
            " (a peer-only host needs only shoal-peer)",
            file=sys.stderr,
        )
        return 1
    from seeder.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
