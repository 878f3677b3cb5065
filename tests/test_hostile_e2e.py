"""Hostile input against a real seeder process over real sockets (LocalFleet).

Oversized length prefixes and garbage frames with the seeder's memory measured; a flood of
garbage connections against a bounded log; the hello timeout; the connection caps; a client
flooding requests; and a thousand idle connections held open during a real rollout.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
from pathlib import Path

import msgpack
import pytest
import trio

from common import messages as m
from common.errors import ConnectionClosed
from common.protocol import frame
from seeder.localfleet import LocalFleet
from tests.conftest import make_app_repo, shoal

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def rss(pid: int) -> int:
    """Resident set size of a process in bytes (VmRSS of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def dial(fleet: LocalFleet) -> trio.abc.Stream:
    """A control connection that passed TLS with the admin credential: what follows is read by
    the control server itself (TLS refusals of strangers are tested in tests/test_tls.py)."""
    assert fleet.control is not None
    tcp = await trio.open_tcp_stream(fleet.control.host, fleet.control.port)
    return await fleet.tls().connect(tcp, fleet.control.host)


def seeder_log(fleet: LocalFleet) -> str:
    return (fleet.root / "logs" / "seeder.log").read_text(errors="replace")


def hello_frame() -> bytes:
    """A valid hello of the certificate ``dial`` presents (an operator's): past it, the frame
    limit after the hello applies."""
    hello = m.ClientHello(client="intruder")
    return frame(msgpack.packb(m.to_wire(hello), use_bin_type=True))


async def read_to_end(stream: trio.abc.Stream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def hosts_list(fleet: LocalFleet) -> list[dict[str, object]]:
    async with fleet.client() as client:
        hosts: list[dict[str, object]] = (await client.call("hosts.list"))["hosts"]
        return hosts


async def test_oversized_prefixes_and_garbage_do_not_grow_the_seeder(fleet: LocalFleet) -> None:
    with trio.fail_after(120):
        await fleet.start_seeder()
        assert fleet.control is not None and fleet.seeder is not None
        pid = fleet.seeder.process.pid
        await hosts_list(fleet)  # warm: the first request allocates what every request needs
        before = rss(pid)

        async def announce_huge(i: int, opened: list[trio.abc.Stream]) -> None:
            stream = await dial(fleet)
            opened.append(stream)
            if i % 2:  # after a valid hello: over the 8 MiB limit
                await stream.send_all(hello_frame())
            await stream.send_all((200 * MiB).to_bytes(4, "big") + b"\0" * 65536)
            # The seeder closes it (a goodbye, or a reset: we still had bytes in flight).
            with contextlib.suppress(trio.BrokenResourceError):
                await read_to_end(stream)

        opened: list[trio.abc.Stream] = []
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(announce_huge, i, opened)
        # Garbage frames of every size up to the pre-hello limit, and beyond it.
        for size in (1, 100, 4096, 16384, 16385, 1 * MiB):
            stream = await dial(fleet)
            body = b"\xc1" * min(size, 70000)
            try:
                await stream.send_all(size.to_bytes(4, "big") + body)
                await read_to_end(stream)
            except trio.BrokenResourceError:
                pass
            await stream.aclose()
        for stream in opened:
            await stream.aclose()
        after = rss(pid)
        grown = after - before
        print(f"seeder RSS before {before / MiB:.1f} MiB, after {after / MiB:.1f} MiB")
        assert grown < 50 * MiB, f"the seeder grew by {grown / MiB:.0f} MiB"
        # Still serving, and nothing registered a host.
        assert await hosts_list(fleet) == []
        # A client past its hello is told why, in a goodbye (unless the reset of our unread bytes
        # overtook it); the log has the first refusal, the rest counted.
        # (Under TLS the reset overtakes the goodbye more often than not: the log is the proof.)
        assert "closed a connection from 127.0.0.1: control message of 209715200 bytes" in (
            seeder_log(fleet)
        )


@pytest.mark.slow
async def test_ten_thousand_garbage_connections_write_a_bounded_log(fleet: LocalFleet) -> None:
    with trio.fail_after(300):
        await fleet.start_seeder()
        assert fleet.control is not None
        lines_before = seeder_log(fleet).count("\n")
        count = 10_000
        done = [0]

        async def flood(worker: int) -> None:
            while done[0] < count:
                done[0] += 1
                stream = await dial(fleet)
                try:
                    await stream.send_all(frame(b"\xc1 garbage %d" % done[0]))
                    await read_to_end(stream)
                except trio.BrokenResourceError:
                    pass
                finally:
                    await stream.aclose()

        async with trio.open_nursery() as nursery:
            for worker in range(20):
                nursery.start_soon(flood, worker)
        assert await hosts_list(fleet) == []
        # Every connection is accounted for once its window's summary is out (one per 10 s).
        while accounted(seeder_log(fleet)) < count - 1:
            await trio.sleep(0.5)
        log = seeder_log(fleet)
        new_lines = log.count("\n") - lines_before
        print(f"{count} garbage connections -> {new_lines} log lines")
        assert log.count("closed a connection from 127.0.0.1: undecodable") >= 1
        assert new_lines < 60, log[-3000:]


def accounted(log: str) -> int:
    """Connections from 127.0.0.1 the log tells of: first lines plus the summaries' counts."""
    first = log.count("closed a connection from 127.0.0.1: ")
    summarised = sum(
        int(line.split(" more connections")[0].rsplit(" ", 1)[1].replace(",", ""))
        for line in log.splitlines()
        if "more connections from 127.0.0.1" in line
    )
    return first + summarised


async def test_silence_closed_at_hello_timeout_and_caps_refuse(fleet: LocalFleet) -> None:
    with trio.fail_after(120):
        await fleet.start_seeder(
            extra=("--hello-timeout", "1", "--max-connections-per-address", "4")
        )
        assert fleet.control is not None
        silent = [await dial(fleet) for _ in range(4)]
        # A fifth connection from the same address is closed at once, without a byte read.
        started = trio.current_time()
        fifth = await trio.open_tcp_stream(
            fleet.control.host, fleet.control.port
        )  # refused before TLS
        with contextlib.suppress(trio.BrokenResourceError):  # closed or reset: nothing said
            assert await read_to_end(fifth) == b""
        assert trio.current_time() - started < 1.0
        # The silent ones are closed at the hello timeout.
        for stream in silent:
            assert await read_to_end(stream) == b""
        waited = trio.current_time() - started
        assert 0.5 < waited < 10, waited
        log = seeder_log(fleet)
        assert "refused a connection from 127.0.0.1: 127.0.0.1 has 4 connections open" in log
        assert "no hello within 1s (--hello-timeout)" in log
        # Once they are gone, clients get in again (the seeder frees a slot just after it
        # closes the connection, so the first try may still find the cap full).
        for _ in range(50):
            with contextlib.suppress(ConnectionClosed):
                assert await hosts_list(fleet) == []
                break
            await trio.sleep(0.1)
        else:
            raise AssertionError("the seeder never admitted a client again")


async def test_a_client_flooding_requests_is_slowed_then_cut(fleet: LocalFleet) -> None:
    with trio.fail_after(120):
        await fleet.start_seeder(
            extra=("--message-rate", "50", "--message-burst", "20", "--rate-cut-after", "2")
        )
        assert fleet.control is not None
        stream = await dial(fleet)
        wire = frame(msgpack.packb(m.to_wire(m.ClientHello(client="flood"))))
        request = frame(msgpack.packb(m.to_wire(m.Request(id=1, method="hosts.list"))))
        started = trio.current_time()
        answered = 0
        goodbye = ""
        unpacked = bytearray()

        async def send_forever() -> None:
            with contextlib.suppress(trio.BrokenResourceError):  # until the seeder cuts us
                await stream.send_all(wire)
                while True:
                    await stream.send_all(request * 100)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_forever)
            # The seeder closes with our requests unread, so its goodbye may be overtaken
            # by a reset; the log says why in any case.
            with contextlib.suppress(trio.BrokenResourceError):
                while data := await stream.receive_some(65536):
                    unpacked += data
                    while len(unpacked) >= 4 and len(unpacked) >= 4 + (
                        n := int.from_bytes(unpacked[:4], "big")
                    ):
                        obj = msgpack.unpackb(bytes(unpacked[4 : 4 + n]))
                        del unpacked[: 4 + n]
                        if obj["t"] == "response":
                            answered += 1
                        elif obj["t"] == "goodbye":
                            goodbye = obj["reason"]
            nursery.cancel_scope.cancel()
        took = trio.current_time() - started
        await stream.aclose()
        print(f"flood: {answered} answers in {took:.1f}s, then: {goodbye or 'a reset'}")
        assert "over 50 messages/s for 2s" in seeder_log(fleet)
        assert goodbye == "" or "over 50 messages/s" in goodbye
        # 20 at once, then 50 a second for the 2 s before the cut (with slack for a slow box).
        assert 2.0 <= took < 20
        assert answered <= 20 + 50 * took * 1.2
        assert await hosts_list(fleet) == []  # others are served still


async def test_a_rollout_completes_with_a_thousand_idle_connections_open(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"needs 1,200 open files; the hard limit here is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(4096, hard)), hard))
    try:
        await _rollout_under_idle_load(fleet, tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _rollout_under_idle_load(fleet: LocalFleet, tmp_path: Path) -> None:
    repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    hosts = ["web-1", "web-2", "web-3"]
    with trio.fail_after(240):
        # Hello timeout 5 s: the idlers are dropped and redial, as an attacker would, so about
        # a thousand are open at any time and the seeder keeps accepting and closing them.
        await fleet.start_seeder(extra=("--hello-timeout", "5"))
        assert fleet.control is not None
        control = fleet.control
        for i, name in enumerate(hosts):
            await fleet.start_peer(name, f"127.77.0.{i + 2}")
        async with fleet.client() as client:
            await fleet.wait_connected(client, hosts)
        release = await trio.to_thread.run_sync(fleet.build_release, repo)
        opened = [0]
        open_now = [0]
        redials = [0]

        async def idler(source: str, delay: float) -> None:
            await trio.sleep(delay)  # spread over the hello timeout: no herd redialling at once
            while True:
                sock = trio.socket.socket()
                await sock.bind((source, 0))
                await sock.connect((control.host, control.port))
                stream = trio.SocketStream(sock)
                opened[0] += 1
                open_now[0] += 1
                try:
                    await read_to_end(stream)  # the seeder closes it at its hello timeout
                except trio.BrokenResourceError:
                    pass
                finally:
                    open_now[0] -= 1
                    await stream.aclose()
                redials[0] += 1

        async with trio.open_nursery() as nursery:
            for i in range(1000):  # 50 per source address, under the per-address cap
                nursery.start_soon(idler, f"127.78.{i // 50}.1", i * 0.004)
            while opened[0] < 1000 or redials[0] == 0:  # all dialled, and the churn has begun
                await trio.sleep(0.1)
            samples: list[int] = []

            async def sample() -> None:
                while True:
                    samples.append(open_now[0])
                    await trio.sleep(0.1)

            nursery.start_soon(sample)
            out = await trio.to_thread.run_sync(
                lambda: shoal(control, "rollout", "start", release, "--wait", timeout=180)
            )
            nursery.cancel_scope.cancel()
        held = statistics.median(samples)
        print(
            f"rollout with a median of {held} idle connections open, {min(samples)} at the least"
            f" ({opened[0]} dialled, {redials[0]} redials)"
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "succeeded: 3 succeeded" in out.stdout
        assert held > 900
