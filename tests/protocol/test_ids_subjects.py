from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import subjects
from protocol.ids import (
    MAX_ID_LENGTH,
    IdError,
    check_ids,
    host_id_from_hostname,
    validate_id,
    validate_session,
    validate_tenant,
)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a.b", "separates NATS subject tokens"),
        ("a*", "wildcard '*'"),
        ("a>", "wildcard '>'"),
        ("a b", "whitespace"),
        ("a\tb", "whitespace"),
        ("a\x07b", "control character U+0007"),
        ("a\x7fb", "control character U+007F"),
        ("a:b", "':'"),
        ("a/b", "'/'"),
        ("", "is empty"),
        ("x" * (MAX_ID_LENGTH + 1), "at most 64"),
        ("-abc", "must start with"),
        ("caf\u00e9", "allowed are ASCII"),
    ],
)
def test_bad_ids_are_rejected_with_the_reason(value: str, reason: str) -> None:
    with pytest.raises(IdError) as err:
        validate_id(value, "session")
    assert reason in str(err.value)
    assert "invalid session id" in str(err.value)


def test_good_ids_pass() -> None:
    for value in ("acme", "worker-3", "host_01", "A", "x" * MAX_ID_LENGTH):
        assert validate_session(value) == value


def test_ctl_is_not_a_tenant() -> None:
    with pytest.raises(IdError, match="reserved"):
        validate_tenant("ctl")


def test_non_strings_are_rejected() -> None:
    with pytest.raises(IdError, match="must be a string"):
        validate_id(42)


def test_hostname_becomes_a_valid_host_id() -> None:
    assert host_id_from_hostname("build-01.example.com") == "build-01"
    assert host_id_from_hostname("weird host!") == "weird-host"
    assert host_id_from_hostname("...") == "host"


@pytest.mark.parametrize(
    ("built", "kind", "session", "event_type"),
    [
        (subjects.heartbeat("acme", "h1"), subjects.Kind.HB, None, None),
        (subjects.lifecycle("acme", "h1"), subjects.Kind.LC, None, None),
        (subjects.command("acme", "h1"), subjects.Kind.CMD, None, None),
        (subjects.output("acme", "h1", "coder"), subjects.Kind.OUT, "coder", None),
        (
            subjects.event("acme", "h1", "coder", "tool_call"),
            subjects.Kind.EVT,
            "coder",
            "tool_call",
        ),
    ],
)
def test_parse_inverts_build(
    built: str, kind: subjects.Kind, session: str | None, event_type: str | None
) -> None:
    parsed = subjects.parse(built)
    assert parsed == subjects.Subject(
        kind=kind, tenant="acme", host="h1", session=session, event_type=event_type
    )
    assert built.split(".")[1] == "acme"  # tenant is always the second token


def test_dotted_event_types_stay_one_token() -> None:
    subject = subjects.event("acme", "h1", "coder", "run.completed")
    assert subject == "fleet.acme.evt.h1.coder.run_completed"
    assert subjects.parse(subject).event_type == "run_completed"


@pytest.mark.parametrize(
    "bad",
    [
        "fleet.acme.hb",
        "other.acme.hb.h1",
        "fleet.acme.xx.h1",
        "fleet.acme.hb.h1.extra",
        "fleet.ctl.hb.h1",
        "fleet.acme.evt.h1.coder",
        "fleet.acme.hb.h*",
    ],
)
def test_parse_rejects_malformed_subjects(bad: str) -> None:
    with pytest.raises(subjects.SubjectError):
        subjects.parse(bad)


def test_builders_validate_ids() -> None:
    with pytest.raises(IdError):
        subjects.heartbeat("acme", "h.1")
    with pytest.raises(IdError):
        subjects.output("acme", "h1", "a b")


def test_msg_id_round_trip() -> None:
    value = subjects.msg_id("h1", "b00t", 42)
    assert value == "h1:b00t:42"
    assert subjects.parse_msg_id(value) == ("h1", "b00t", 42)
    with pytest.raises(subjects.SubjectError):
        subjects.parse_msg_id("h1:b00t")


def test_controller_api_subjects() -> None:
    assert subjects.controller_api("ps") == "fleet.ctl.ps"
    assert subjects.parse_controller_api("fleet.ctl.ps") == "ps"
    with pytest.raises(subjects.SubjectError):
        subjects.parse_controller_api("fleet.acme.ps")
    assert subjects.controller_api("events.search") == "fleet.ctl.events.search"
    assert subjects.parse_controller_api("fleet.ctl.events.search") == "events.search"


_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,8}", fullmatch=True)


@given(tenant=_ids, host=_ids, session=_ids, other=_ids, seq=st.integers(0, 10**9))
def test_the_cheap_comparisons_agree_with_the_builders(
    tenant: str, host: str, session: str, other: str, seq: int
) -> None:
    hb = subjects.heartbeat(tenant, host)
    assert subjects.names_host(hb, subjects.Kind.HB, tenant, host)
    assert subjects.names_host(hb, subjects.Kind.HB, tenant, other) == (other == host)
    assert not subjects.names_host(hb, subjects.Kind.LC, tenant, host)
    evt = subjects.event(tenant, host, session, "tool_call")
    assert subjects.names_event(evt, tenant, host, session, "tool_call")
    assert subjects.names_event(evt, tenant, host, other, "tool_call") == (other == session)
    assert not subjects.names_event(evt, tenant, host, session, "tool_result")
    mid = subjects.msg_id(host, session, seq)
    assert subjects.names_msg_id(mid, host, session, seq)
    assert not subjects.names_msg_id(mid, host, session, seq + 1)
    assert subjects.names_msg_id(mid, other, session, seq) == (other == host)


_texts = st.text(st.sampled_from("ab0_-.\n *"), max_size=6)


@given(values=st.lists(st.one_of(_ids, _texts), min_size=1, max_size=12))
def test_ids_checked_at_once_agree_with_one_at_a_time(values: list[str]) -> None:
    """`check_ids` accepts exactly the lists whose every id `validate_id` accepts, and its
    error is the one of the first bad id, named after its place."""
    kinds = ("tenant", "host", "session")
    first_bad: IdError | None = None
    for i, value in enumerate(values):
        try:
            validate_id(value, kinds[min(i, 2)])
        except IdError as exc:
            first_bad = exc
            break
    if first_bad is None:
        check_ids(values, kinds)
    else:
        with pytest.raises(IdError) as got:
            check_ids(values, kinds)
        assert str(got.value) == str(first_bad)


def test_a_newline_cannot_pass_as_a_separator() -> None:
    with pytest.raises(IdError, match="whitespace"):
        check_ids(["acme", "h1\nh2"], ("tenant", "host"))
