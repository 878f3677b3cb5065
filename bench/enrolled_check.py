"""The tracker's enrolled check per announce, at fleet size: a scan of every certificate (what
it was) against the CA's index by name (what it is).

A real seeder identity and store in a temp dir: ``--hosts`` host certificates issued into
``issued.json`` (plus the seeder's and the admin's), every host registered in the store, then
every host announces ``--rounds`` times (a re-announce each). Printed, not asserted::

    python -m bench.enrolled_check [--hosts 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common.crypto import certs
from seeder.authority import HOST_LIFETIME, SeederCA, init_identity
from seeder.closed_swarm import enrolled
from seeder.store import HostRecord, Store


def scan(store: Store, authority: SeederCA) -> Callable[[str], bool]:
    """The check before the index: every certificate, on every announce."""

    def check(name: str) -> bool:
        now = time.time()
        return store.is_host(name) and any(
            i.name == name
            and i.role == certs.HOST_ROLE
            and i.revoked_at is None
            and i.not_after > now
            for i in authority.certificates()
        )

    return check


def fleet(root: Path, hosts: int) -> tuple[SeederCA, Store, list[str]]:
    """A seeder identity that issued ``hosts`` host certificates (through the CA, the one writer
    of ``issued.json``; one key shared, key generation is not measured), all registered."""
    now = dt.datetime.now(dt.UTC)
    init_identity(root, ["127.0.0.1"], now)
    authority = SeederCA(root)
    public = certs.public_pem(certs.generate_key().public_key())
    names = [f"web-{i:05d}" for i in range(hosts)]
    store = Store(root / "seeder.db")
    for name in names:
        authority.issue(public, name, certs.HOST_ROLE, now=now, lifetime=HOST_LIFETIME)
        store.upsert_host(HostRecord(name, "10.0.0.1", 6881, {}, None, [], True, 0.0), 0.0)
    return authority, store, names


def timed(check: Callable[[str], bool], names: list[str], rounds: int) -> float:
    """Seconds for ``rounds`` announces of every host; every one must be admitted."""
    began = time.perf_counter()
    for _ in range(rounds):
        for name in names:
            if not check(name):
                raise SystemExit(f"{name} was refused: the benchmark's fleet is wrong")
    return time.perf_counter() - began


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=2000, help="enrolled hosts (2000)")
    p.add_argument("--rounds", type=int, default=5, help="announces per host (5)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-enrolled-") as tmp:
        began = time.perf_counter()
        authority, store, names = fleet(Path(tmp), args.hosts)
        print(f"set-up: {args.hosts} certificates issued in {time.perf_counter() - began:.1f} s")
        try:
            checks = args.hosts * args.rounds
            print(f"{args.hosts} hosts, {checks} enrolled checks ({args.rounds} per host):")
            for label, check in (
                ("scan of every certificate (before)", scan(store, authority)),
                ("index by name (after)", enrolled(store, authority)),
                ("  of which the store's is_host", store.is_host),
            ):
                seconds = timed(check, names, args.rounds)
                per = seconds / checks * 1e6
                print(f"  {label:38} {seconds * 1000:9.1f} ms total {per:9.2f} µs/check")
        finally:
            store.close()


if __name__ == "__main__":
    main()
