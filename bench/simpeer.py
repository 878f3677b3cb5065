"""Simulated peers for the control-plane benchmark: the real protocol, no downloads, no hooks.

A :class:`SimPeer` dials the seeder from its own 127.x address (bind before connect, as
``common.channel.connect`` does with ``local_ip``) over mutual TLS with its own host certificate
(:func:`host_credentials`), says the real :class:`~common.messages.Hello`,
heartbeats at the interval the seeder's Welcome names, and answers Stage and Activate with exactly
the step reports a real peer (``peer/stage.py``, ``peer/lifecycle.py``) sends for a fresh host, at
once: the transfer and the hooks cost nothing, so what the benchmark measures is control overhead.
Like a real peer it keeps every report until the seeder acks it, re-sends unacked reports after a
reconnect, repeats a final result for a repeated command instead of redoing it, and refuses
commands carrying an older fencing token than the newest it has seen.

The report lists are derived from ``common.appspec`` (the lifecycle events, in order, and which of
them run the previous release's scripts) and from the release's own appspec (which events have
hooks), not hard-coded.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from common import appspec
from common import messages as m
from common.addr import Address
from common.appspec import AppSpec
from common.channel import Channel, connect
from common.crypto import certs
from common.errors import ConnectionClosed, ProtocolError
from common.tls import ClientTLS

# Events whose scripts are the *previous* release's (CodeDeploy); main has only ApplicationStop,
# the peer engineer's branch adds the block-traffic events and names them in common.appspec.
PREVIOUS_RELEASE_EVENTS: tuple[str, ...] = getattr(
    appspec, "PREVIOUS_RELEASE_EVENTS", ("ApplicationStop",)
)
FAKE_BT_PORT = 9  # never dialled: simulated peers download nothing
HELLO_TIMEOUT = 30.0
RECONNECT_DELAY = 1.0


@dataclass(frozen=True)
class Step:
    """One step report a real peer sends: (step, state, result, detail)."""

    step: str
    state: str
    result: str = ""
    detail: str = ""


def stage_steps(release_id: str) -> list[Step]:
    """What ``peer.stage.stage`` reports for a release it does not have yet, in order."""
    steps = [Step("stage", "running", detail=release_id)]
    for name in m.STAGE_STEPS:
        steps += [Step(name, "running"), Step(name, "succeeded", "succeeded", "simulated")]
    steps.append(Step("stage", "succeeded", "succeeded", f"{release_id} staged"))
    return steps


def activate_steps(spec: AppSpec, release_id: str, previous: AppSpec | None) -> list[Step]:
    """What ``peer.lifecycle.activate`` reports, hooks succeeding instantly.

    An event with hooks is reported running then succeeded; one without (or whose previous
    release is absent, for the previous release's events) once, as skipped. ``Install`` comes
    right after ``BeforeInstall``.
    """
    steps = [Step("activate", "running", detail=release_id)]
    for event in appspec.LIFECYCLE_EVENTS:
        owner = previous if event in PREVIOUS_RELEASE_EVENTS else spec
        if owner is not None and owner.hooks.get(event):
            steps += [Step(event, "running"), Step(event, "succeeded", "succeeded", "exit 0")]
        else:
            steps.append(Step(event, "succeeded", "skipped", "no hooks"))
        if event == "BeforeInstall":
            steps += [
                Step("Install", "running"),
                Step("Install", "succeeded", "succeeded", f"current -> {release_id}"),
            ]
    steps.append(Step("activate", "succeeded", "succeeded", f"current -> {release_id}"))
    return steps


class Milestones:
    """How many simulated peers registered and finished each rollout; wakes who waits for all."""

    def __init__(self, hosts: int) -> None:
        self.hosts = hosts
        self.registered = 0
        self.all_registered = trio.Event()
        self.done: Counter[str] = Counter()
        self._all_done: dict[str, trio.Event] = {}

    def on_registered(self) -> None:
        self.registered += 1
        if self.registered >= self.hosts:
            self.all_registered.set()

    def on_done(self, rollout_id: str) -> None:
        self.done[rollout_id] += 1
        if self.done[rollout_id] >= self.hosts:
            self._event(rollout_id).set()

    async def wait_done(self, rollout_id: str) -> None:
        """Until every simulated peer had its final activate report of ``rollout_id`` acked."""
        await self._event(rollout_id).wait()

    def _event(self, rollout_id: str) -> trio.Event:
        return self._all_done.setdefault(rollout_id, trio.Event())


@dataclass
class PeerTally:
    """What one simulated peer saw and sent (wall-clock times, comparable with the seeder's)."""

    registered_at: float | None = None
    stage_at: dict[str, float] = field(default_factory=dict)  # rollout -> first Stage received
    activate_at: dict[str, float] = field(default_factory=dict)
    staged_at: dict[str, float] = field(default_factory=dict)  # rollout -> final stage sent
    done_at: dict[str, float] = field(default_factory=dict)  # rollout -> final activate acked
    sent: int = 0  # step reports sent (a re-send after reconnect counts again)
    acked: int = 0
    reconnects: int = 0
    refused: int = 0
    repeats: int = 0  # repeated Stage/Activate answered from what was already done
    other: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


def host_credentials(ca_dir: Path, names: list[str], out: Path) -> dict[str, ClientTLS]:
    """A host certificate for each simulated peer, issued in-process by the seeder's CA in
    ``ca_dir`` (``ca.crt``, ``ca.key``) and written under ``out``: each peer presents its own
    name, as a real enrolled host does. They are not in the CA's index (never revoked); one
    ECDSA key is shared, since key generation is not what the benchmark measures."""
    ca = certs.Authority.from_pem(
        (ca_dir / "ca.crt").read_bytes(), (ca_dir / "ca.key").read_bytes()
    )
    ca_pem = certs.cert_pem(ca.cert)
    key = certs.generate_key()
    out.mkdir(parents=True, exist_ok=True)
    key_file = out / "sim.key"
    certs.write_private(key_file, certs.key_pem(key), overwrite=True)
    now = dt.datetime.now(dt.UTC)
    credentials = {}
    for name in names:
        cert = ca.issue(key.public_key(), name, certs.HOST_ROLE, now=now)
        cert_file = out / f"{name}.crt"
        cert_file.write_bytes(certs.cert_pem(cert))  # scratch files: no fsync per certificate
        credentials[name] = ClientTLS(cert_file, key_file, ca_pem)
    return credentials


class SimPeer:
    """One simulated host. ``run`` keeps it connected until cancelled."""

    def __init__(
        self,
        name: str,
        ip: str,
        seeder: Address,
        spec: AppSpec,
        milestones: Milestones,
        tls: ClientTLS,
    ) -> None:
        self.milestones = milestones
        self.tls = tls
        self.name = name
        self.ip = ip
        self.seeder = seeder
        self.spec = spec
        self.tally = PeerTally()
        self._seq = 0
        self._outbox: dict[int, m.StepReport] = {}  # seq -> report, until acked
        self._unsent: list[int] = []
        self._wake = trio.Event()
        self._token = 0
        self._staged: set[str] = set()  # release ids
        self._current: str | None = None
        self._activated: dict[tuple[str, int], str] = {}  # (rollout, attempt) -> final state
        self._finals: dict[int, tuple[str, str]] = {}  # seq of a final activate report
        # -> (step, rollout)

    @property
    def unacked(self) -> int:
        """Step reports sent or queued that the seeder has not acked yet."""
        return len(self._outbox)

    async def run(self, connect_limit: trio.CapacityLimiter) -> None:
        while True:
            try:
                async with connect_limit:
                    channel = await connect(self.seeder, self.tls, local_ip=self.ip)
                async with channel:
                    await self._session(channel, connect_limit)
            except (ConnectionClosed, ProtocolError, trio.TooSlowError, OSError) as exc:
                self.tally.errors.append(f"{type(exc).__name__}: {exc}")
                del self.tally.errors[:-5]
            self.tally.reconnects += 1
            await trio.sleep(RECONNECT_DELAY)

    async def _session(self, channel: Channel, connect_limit: trio.CapacityLimiter) -> None:
        async with connect_limit:  # the handshake counts as part of connecting
            await channel.send(
                m.Hello(
                    name=self.name,
                    address=self.ip,
                    bt_port=FAKE_BT_PORT,
                    labels={"bench": "control-plane"},
                    current=self._current,
                    staged=sorted(self._staged),
                )
            )
            with trio.fail_after(HELLO_TIMEOUT):
                welcome = await channel.receive()
        if not isinstance(welcome, m.Welcome):
            raise ProtocolError(f"expected welcome, got {welcome.TYPE}")
        if self.tally.registered_at is None:
            self.tally.registered_at = time.time()
            self.milestones.on_registered()
        self._unsent = sorted(self._outbox)  # a new connection re-sends everything unacked
        failure: list[Exception] = []
        async with trio.open_nursery() as nursery:

            async def guarded(job: Callable[[], Awaitable[None]]) -> None:
                try:
                    await job()
                except (ConnectionClosed, ProtocolError) as exc:
                    failure.append(exc)
                    nursery.cancel_scope.cancel()

            nursery.start_soon(
                guarded, lambda: self._heartbeats(channel, welcome.heartbeat_interval)
            )
            nursery.start_soon(guarded, lambda: self._pump(channel))
            nursery.start_soon(guarded, lambda: self._receive(channel))
        if failure:
            raise failure[0]

    async def _heartbeats(self, channel: Channel, interval: float) -> None:
        interval = interval if math.isfinite(interval) and interval > 0 else 5.0
        while True:
            await channel.send(m.Heartbeat(sent_at=time.time()))
            await trio.sleep(interval)

    async def _pump(self, channel: Channel) -> None:
        while True:
            while self._unsent:
                seq = self._unsent.pop(0)
                report = self._outbox.get(seq)
                if report is not None:
                    await channel.send(report)
                    self.tally.sent += 1
                    if report.step == "stage" and report.state != "running":
                        self.tally.staged_at.setdefault(report.rollout_id, time.time())
            await self._wake.wait()
            self._wake = trio.Event()

    async def _receive(self, channel: Channel) -> None:
        while True:
            msg = await channel.receive()
            now = time.time()
            if isinstance(msg, m.Ack):
                self._on_ack(msg.seq, now)
            elif isinstance(msg, m.Stage):
                if self._fenced(msg.rollout_id, msg.token):
                    await channel.send(self._refusal(msg.rollout_id, msg.token))
                else:
                    self._on_stage(msg, now)
            elif isinstance(msg, m.Activate):
                if self._fenced(msg.rollout_id, msg.token):
                    await channel.send(self._refusal(msg.rollout_id, msg.token))
                else:
                    self._on_activate(msg, now)
            else:
                self.tally.other[msg.TYPE] += 1

    def _fenced(self, rollout_id: str, token: int) -> bool:
        if token < self._token:
            self.tally.refused += 1
            return True
        self._token = token
        return False

    def _refusal(self, rollout_id: str, token: int) -> m.Refused:
        return m.Refused(
            rollout_id=rollout_id,
            token=token,
            reason=f"token {token} is older than {self._token}, the newest this host has seen",
        )

    def _on_ack(self, seq: int, now: float) -> None:
        if self._outbox.pop(seq, None) is not None:
            self.tally.acked += 1
            step, rollout_id = self._finals.pop(seq, ("", ""))
            if step == "activate" and rollout_id not in self.tally.done_at:
                self.tally.done_at[rollout_id] = now
                self.milestones.on_done(rollout_id)

    def _on_stage(self, cmd: m.Stage, now: float) -> None:
        release_id = str(cmd.manifest.get("release_id", ""))
        self.tally.stage_at.setdefault(cmd.rollout_id, now)
        if release_id in self._staged:  # what peer.stage does for a release it already has
            self.tally.repeats += 1
            steps = [Step("stage", "succeeded", "succeeded", f"{release_id} already staged")]
        else:
            self._staged.add(release_id)
            steps = stage_steps(release_id)
        self._report(cmd.rollout_id, 1, steps)

    def _on_activate(self, cmd: m.Activate, now: float) -> None:
        key = (cmd.rollout_id, cmd.attempt)
        self.tally.activate_at.setdefault(cmd.rollout_id, now)
        if key in self._activated:  # the journal answers a repeated Activate
            self.tally.repeats += 1
            steps = [Step("activate", self._activated[key], "succeeded", "repeated")]
        elif cmd.release_id not in self._staged:
            steps = [
                Step("activate", "running", detail=cmd.release_id),
                Step("activate", "failed", "error", f"release {cmd.release_id} is not staged"),
            ]
        else:
            previous = self.spec if self._current is not None else None
            steps = activate_steps(self.spec, cmd.release_id, previous)
            self._current = cmd.release_id
        self._activated[key] = steps[-1].state
        self._report(cmd.rollout_id, cmd.attempt, steps)

    def _report(self, rollout_id: str, attempt: int, steps: list[Step]) -> None:
        for s in steps:
            self._seq += 1
            self._outbox[self._seq] = m.StepReport(
                rollout_id=rollout_id,
                host=self.name,
                step=s.step,
                attempt=attempt,
                state=s.state,
                result=s.result,
                detail=s.detail,
                at=time.time(),
                seq=self._seq,
            )
            self._unsent.append(self._seq)
            if s.step == "activate" and s.state != "running":
                self._finals[self._seq] = (s.step, rollout_id)
        self._wake.set()


def sim_address(index: int) -> str:
    """The source address of simulated host ``index``: 127.10.0.1, 127.10.0.2, ... (/8 loopback)."""
    if not 0 <= index < 250 * 250 * 250:
        raise ValueError(f"simulated host index {index} is out of range")
    a, rest = divmod(index, 250 * 250)
    b, c = divmod(rest, 250)
    return f"127.{10 + a}.{b}.{c + 1}"
