"""``shoal seeder run`` options for the control port's limits (see :mod:`seeder.admission`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from seeder import admission as a


def add_options(run: argparse.ArgumentParser) -> None:
    """The limit options of ``seeder run``, each defaulting to :class:`~seeder.admission.Limits`."""
    group = run.add_argument_group("limits (hostile input on the control port)")
    group.add_argument(
        "--max-connections",
        metavar="N",
        type=_number(int, 1),
        default=a.MAX_CONNECTIONS,
        help="control connections open at once, in total (default: %(default)s)",
    )
    group.add_argument(
        "--max-connections-per-address",
        metavar="N",
        type=_number(int, 1),
        default=a.MAX_PER_ADDRESS,
        help="control connections open at once from one IP address (default: %(default)s)",
    )
    group.add_argument(
        "--hello-timeout",
        metavar="SECONDS",
        type=_number(float, 0),
        default=a.HELLO_TIMEOUT,
        help="seconds a new connection has to complete its handshake and hello"
        " (default: %(default)s)",
    )
    group.add_argument(
        "--message-rate",
        metavar="PER_SECOND",
        type=_number(float, 0),
        default=a.MESSAGE_RATE,
        help="messages per second one connection may send on average; faster ones are slowed"
        " (default: %(default)s)",
    )
    group.add_argument(
        "--message-burst",
        metavar="N",
        type=_number(int, 1),
        default=a.MESSAGE_BURST,
        help="messages one connection may send at once above its rate (default: %(default)s)",
    )
    group.add_argument(
        "--rate-cut-after",
        metavar="SECONDS",
        type=_number(float, 0),
        default=a.CUT_AFTER,
        help="seconds a connection may stay over its rate before it is closed"
        " (default: %(default)s)",
    )


def limits_from(args: argparse.Namespace) -> a.Limits:
    return a.Limits(
        max_connections=args.max_connections,
        max_per_address=args.max_connections_per_address,
        hello_timeout=args.hello_timeout,
        message_rate=args.message_rate,
        message_burst=args.message_burst,
        cut_after=args.rate_cut_after,
    )


def _number(kind: Callable[[str], float], low: float) -> Callable[[str], float]:
    """An argparse type: an int or float above ``low`` (at least it, for ints), finite."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        ok = value >= low if kind is int else low < value < float("inf")
        if not ok:
            bound = f"at least {low}" if kind is int else f"a finite number above {low:g}"
            raise argparse.ArgumentTypeError(f"{text!r}: give {bound}")
        return value

    return parse
