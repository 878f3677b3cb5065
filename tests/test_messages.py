"""The precompiled per-class validators of common.messages: every field's type, strictly."""

from __future__ import annotations

from typing import Any

import pytest

from common import messages as m
from common.decoding import compile_check
from common.errors import RemoteProtocolError


@pytest.mark.parametrize(
    ("hint", "good", "bad"),
    [
        (int, [0, -3, 2**70], [True, False, 1.0, "1", None]),
        (float, [0.5, 3, -1, 2**70], [True, False, "1.0", None]),
        (str, ["", "é"], [b"x", 1, None]),
        (bool, [True, False], [0, 1, None]),
        (bytes, [b"", b"\x00"], ["x", bytearray(b"x"), None]),
        (int | None, [None, 4], [True, 1.5, "4"]),
        (str | None, [None, "x"], [1, b"x"]),
        (list[str], [[], ["a", "b"]], [("a",), ["a", 1], [None], "ab"]),
        (list[int], [[], [1, 2]], [[1, True], [1.0], {1: 1}]),
        (list[Any], [[], [1, "x", None]], [(1,), {}, None]),
        (list[list[Any]], [[], [["a", 1]]], [["a"], [("a", 1)]]),
        (dict[str, str], [{}, {"a": "b"}], [{"a": 1}, {1: "b"}, [("a", "b")]]),
        (dict[str, Any], [{}, {"a": [1, {}]}], [{1: "x"}, {b"a": 1}, []]),
        (dict[str, int], [{"a": 1}], [{"a": True}, {"a": 1.0}]),
        (list[dict[str, Any]], [[{"ok": True}]], [[{1: 2}], [[]]]),
        (Any, [None, 1, "x", [], {}], []),
        (int | str, [1, "x"], [True, None, 1.5]),
    ],
)
def test_compiled_checks(hint: Any, good: list[object], bad: list[object]) -> None:
    check = compile_check(hint)
    if hint is Any:
        assert check is None
        return
    assert check is not None
    for value in good:
        assert check(value), value
    for value in bad:
        assert not check(value), value


def test_every_message_class_compiles_and_round_trips_its_defaults() -> None:
    # One of each, with only its required fields: the decoder fills in the same defaults.
    samples: list[m.Message] = [
        m.Hello(name="a", address="b", bt_port=1),
        m.Heartbeat(sent_at=1),
        m.StepReport("r", "h", "s", 1, "running"),
        m.PreflightResult(check_id="c", host="h"),
        m.Progress(rollout_id="r", host="h", done=1, total=2),
        m.Refused(rollout_id="r", token=1, reason="x"),
        m.OutputLine(rollout_id="r", host="h", step="s", line="l"),
        m.Welcome(heartbeat_interval=5.0),
        m.Stage(rollout_id="r", manifest={}, torrent=b"t"),
        m.SwarmMembers(rollout_id="r", addresses=["10.0.0.1"]),
        m.Activate(rollout_id="r", release_id="x"),
        m.Abort(rollout_id="r"),
        m.Preflight(check_id="c", release={}),
        m.Ack(seq=1),
        m.ClientHello(client="c"),
        m.Request(id=1, method="x"),
        m.Response(id=1, ok=True),
        m.RolloutEvent(rollout_id="r", seq=1, at=1.0, kind="k"),
        m.Goodbye(reason="x"),
    ]
    assert {type(s) for s in samples} == set(m.MESSAGE_TYPES.values())
    for sample in samples:
        wire = m.to_wire(sample)
        assert m.from_wire(wire) == sample
        required = {k: v for k, v in wire.items() if k == "t" or k in _required(type(sample))}
        decoded = m.from_wire(required)
        assert decoded == sample
        assert type(decoded) is type(sample)


def _required(cls: type[m.Message]) -> set[str]:
    import dataclasses

    return {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }


def test_defaults_from_a_factory_are_fresh_per_message() -> None:
    a = m.from_wire({"t": "hello", "name": "a", "address": "b", "bt_port": 1})
    b = m.from_wire({"t": "hello", "name": "a", "address": "b", "bt_port": 1})
    assert isinstance(a, m.Hello) and isinstance(b, m.Hello)
    assert a.labels == {} and a.labels is not b.labels and a.staged is not b.staged


def test_decoded_messages_are_still_frozen() -> None:
    msg = m.from_wire({"t": "ack", "seq": 1})
    with pytest.raises(AttributeError):
        msg.seq = 2  # type: ignore[attr-defined]


def test_unknown_fields_are_ignored() -> None:
    assert m.from_wire({"t": "ack", "seq": 1, "later": "x"}) == m.Ack(seq=1)


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (
            {
                "t": "step",
                "rollout_id": "r",
                "host": "h",
                "step": "s",
                "attempt": True,
                "state": "running",
            },
            "step message: field 'attempt' has the wrong type (bool)",
        ),
        (
            {
                "t": "step",
                "rollout_id": "r",
                "host": "h",
                "step": "s",
                "attempt": 1,
                "state": "running",
                "output": ["a", 2],
            },
            "step message: field 'output' has the wrong type (list)",
        ),
        (
            {
                "t": "step",
                "rollout_id": "r",
                "host": "h",
                "step": "s",
                "attempt": 1,
                "state": "running",
                "exit_code": "0",
            },
            "step message: field 'exit_code' has the wrong type (str)",
        ),
        (
            {"t": "heartbeat", "sent_at": False},
            "heartbeat message: field 'sent_at' has the wrong type (bool)",
        ),
        (
            {"t": "abort", "rollout_id": "r", "kill": 1},
            "abort message: field 'kill' has the wrong type (int)",
        ),
        (
            {"t": "hello", "name": "x", "labels": {"a": 1}},
            "hello message: field 'labels' has the wrong type (dict)",
        ),
        (
            {"t": "request", "id": 1, "method": "m", "params": {1: 2}},
            "request message: field 'params' has the wrong type (dict)",
        ),
        # a wrong type is reported before missing fields, as before
        ({"t": "hello", "name": 5}, "hello message: field 'name' has the wrong type (int)"),
        (
            {"t": "hello", "name": "x"},
            "hello message is missing fields "
            "['address', 'bt_port', 'labels', 'current', 'staged', 'protocol', 'version']",
        ),
        ({"t": "ack"}, "ack message is missing fields ['seq']"),
        ({"t": 5}, "unknown control message type 5"),
        ({}, "unknown control message type None"),
    ],
)
def test_malformed_messages_name_the_field(wire: dict[str, Any], error: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        m.from_wire(wire)
    assert str(caught.value) == error


def test_float_fields_accept_ints_and_keep_them() -> None:
    assert m.from_wire({"t": "heartbeat", "sent_at": 3}) == m.Heartbeat(sent_at=3)


def test_no_validator_for_an_unknown_hint() -> None:
    with pytest.raises(TypeError, match="no validator"):
        compile_check(tuple[int, int])
