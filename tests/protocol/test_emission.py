"""The emission contract: terminal stripping, coercion, and the incremental block parser."""

from __future__ import annotations

import json
import time
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.emission import (
    DEFAULT_BEGIN,
    DEFAULT_END,
    EmissionParser,
    Emitted,
    Invalid,
    Result,
    coerce,
    invalid_payload,
    parse_block,
    parse_lines,
    strip_terminal,
    to_event,
)
from protocol.events import (
    MAX_EXCERPT_CHARS,
    MAX_SUMMARY_CHARS,
    Event,
    EventLink,
    LinkType,
    Severity,
)

B, E = DEFAULT_BEGIN, DEFAULT_END
GOOD = {"event_type": "run.completed", "summary": "tests pass"}


def block(body: str, *, eol: str = "\n") -> str:
    return f"{B}{eol}{body}{eol}{E}{eol}"


def run(stream: str, chunks: list[int] | None = None, now: float = 0.0) -> list[Result]:
    """Feed ``stream`` cut at the given positions; return everything the parser produced."""
    parser = EmissionParser()
    out: list[Result] = []
    last = 0
    for cut in [*(chunks or []), len(stream)]:
        out += parser.feed(stream[last:cut], now)
        last = cut
    return out


def one(stream: str) -> Result:
    results = run(stream)
    assert len(results) == 1, results
    return results[0]


def one_invalid(stream: str) -> Invalid:
    result = one(stream)
    assert isinstance(result, Invalid), result
    assert len(result.excerpt) <= MAX_EXCERPT_CHARS
    return result


def emitted(obj: dict[str, Any]) -> Emitted:
    result = coerce(obj)
    assert isinstance(result, Emitted), result
    return result


# --- terminal stripping -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seen"),
    [
        ("\x1b[1;31mred\x1b[0m text", "red text"),
        ("\x1b]0;vim - notes\x07after title", "after title"),  # OSC ended by BEL
        ("\x1b]8;;https://x.test\x1b\\link\x1b]8;;\x1b\\", "link"),  # OSC 8 hyperlink, ST
        ("\x1b(Bplain\x1b)0\x1b=\x1b>", "plain"),  # charset selects, keypad modes
        ("\x1b[?25l\x1b[?2004hhidden cursor", "hidden cursor"),  # private modes
        ("\x9b31mC1 csi", "C1 csi"),
        ("Progress 10%\rProgress 100%", "Progress 100%"),
        ("Working...\r\x1b[2KDone", "Done"),  # redraw with erase-line
        ("abcdef\rXY", "XYcdef"),  # a shorter redraw leaves what the screen leaves
        ("abcdef\r\x1b[Kxy", "xy"),
        ("abc\b\bXY", "aXY"),
        ("tpyo\b\b\b\b\btypo", "typo"),  # more backspaces than columns stop at column 0
        ("line\r", "line"),  # CRLF ending
        ("a\tb", "a\tb"),
        ("ab\x1b[6Gc", "ab   c"),  # cursor to column 6
        ("trailing escape\x1b", "trailing escape"),
        ("bell\x07 and nul\x00", "bell and nul"),
    ],
)
def test_strip_terminal_shows_what_the_screen_shows(raw: str, seen: str) -> None:
    assert strip_terminal(raw) == seen


def test_strip_terminal_works_line_by_line() -> None:
    raw = "one\r\n\x1b[32mtwo\x1b[0m\r\nxx\rthree\r\n"
    assert strip_terminal(raw) == "one\ntwo\nthree\n"


def test_unterminated_osc_does_not_eat_the_next_line() -> None:
    assert strip_terminal("\x1b]0;title never ends\nnext") == "\nnext"


# --- blocks through the parser ------------------------------------------------------------


def test_single_object_block() -> None:
    result = one(
        "some agent chatter\n"
        + block(json.dumps({**GOOD, "severity": "error", "tags": ["ci"]}))
        + "more chatter\n"
    )
    assert result == Emitted(
        event_type="run.completed",
        summary="tests pass",
        tags=["ci"],
        payload={},
        severity=Severity.ERROR,
        confidence=None,
        operator_action_required=False,
        risk_detected=False,
        artifact_refs=[],
        idempotency_key=None,
        dedupe_key=None,
        links=[],
        attention_candidate=True,
        schema_version=1,
    )


def test_sentinels_may_be_indented_coloured_and_crlf() -> None:
    stream = (
        "  \x1b[2m" + B + "\x1b[22m  \r\n"
        '  {"event_type": "\x1b[33mrun.state\x1b[0m",\r\n'
        '   "summary": "waiting"}\r\n'
        "\t" + E + "\r\n"
    )
    result = one(stream)
    assert isinstance(result, Emitted)
    assert (result.event_type, result.summary) == ("run.state", "waiting")


def test_sentinel_split_by_highlighting_escapes_counts() -> None:
    highlighted = "<!--\x1b[1mFLEET_EVENTS\x1b[0m_BEGIN-->\n" + json.dumps(GOOD) + "\n"
    assert isinstance(one(highlighted + "\x1b[2m" + E + "\x1b[0m\n"), Emitted)


def test_sentinel_drawn_over_a_spinner_counts_and_one_erased_does_not() -> None:
    redrawn = "\u280b thinking\r" + B + "\n" + json.dumps(GOOD) + "\n" + E + "\n"
    assert isinstance(one(redrawn), Emitted)
    erased = B + "\r\x1b[2Kthinking\n" + json.dumps(GOOD) + "\n" + E + "\n"
    assert one_invalid(erased).reason == "stray_end"


@pytest.mark.parametrize(
    "line",
    [
        "<!--FLEET_EVENTS_BEGN-->",  # misspelt
        "<!-- FLEET_EVENTS_BEGIN -->",  # spaced out
        "see " + B + " in the docs",  # quoted in prose: not on its own line
        B + E,
    ],
)
def test_garbled_or_quoted_sentinels_are_text(line: str) -> None:
    assert run(line + "\n" + json.dumps(GOOD) + "\n") == []


def test_custom_sentinels_per_runtime() -> None:
    parser = EmissionParser("@@events", "@@end")
    results = parser.feed(f"@@events\n{json.dumps(GOOD)}\n@@end\n{block('{}')}", 0.0)
    assert [type(r) for r in results] == [Emitted]


def test_array_with_good_and_bad_elements_keeps_order() -> None:
    body = json.dumps(
        [GOOD, 3, {"summary": "no type"}, ["nested"], {**GOOD, "event_type": "x.custom"}]
    )
    results = run(block(body))
    assert [r.reason if isinstance(r, Invalid) else r.event_type for r in results] == [
        "run.completed",
        "not_an_object",
        "missing_field:event_type",
        "not_an_object",
        "x.custom",
    ]
    assert isinstance(results[1], Invalid)
    assert "element 1" in results[1].detail


def test_empty_array_is_no_events() -> None:
    assert run(block("[]")) == []


def test_code_fence_around_the_json_is_unwrapped() -> None:
    assert isinstance(one(block("```json\n" + json.dumps(GOOD) + "\n```")), Emitted)


def test_tui_hard_wrap_inside_a_string_is_kept_with_a_note() -> None:
    body = '{"event_type": "run.completed", "summary": "a long summary that\n  wrapped"}'
    result = one(block(body))
    assert isinstance(result, Emitted)
    assert result.summary == "a long summary that\n  wrapped"
    assert "terminal line wrap" in result.payload["_notes"][0]


# --- every malformed case is exactly one validation error ---------------------------------


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (block('{"event_type": "x", "summary": }'), "invalid_json"),
        (block("{'event_type': 'x', 'summary': 'single quotes'}"), "invalid_json"),
        (block('{"event_type": "x", "summary": "y", "n": NaN}'), "invalid_json"),
        (block('"just a string"'), "not_an_object"),
        (block("42"), "not_an_object"),
        (block("null"), "not_an_object"),
        (block(""), "empty_block"),
        (block("   \n\n  "), "empty_block"),
        (block('{"summary": "no type"}'), "missing_field:event_type"),
        (block('{"event_type": "x"}'), "missing_field:summary"),
        (block('{"event_type": "x", "summary": "   "}'), "missing_field:summary"),
        (block('{"event_type": "x", "summary": null}'), "missing_field:summary"),
        (block('{"event_type": 7, "summary": "y"}'), "bad_type:event_type"),
        (block('{"event_type": "' + "t" * 129 + '", "summary": "y"}'), "bad_value:event_type"),
        (block('{"event_type": "x", "summary": ["y"]}'), "bad_type:summary"),
        (block('{"event_type": "x", "summary": true}'), "bad_type:summary"),
        (block('{"event_type": "x", "summary": "y", "confidence": "high"}'), "bad_type:confidence"),
        (block('{"event_type": "x", "summary": "y", "confidence": true}'), "bad_type:confidence"),
        (block('{"event_type": "x", "summary": "y", "confidence": "nan"}'), "bad_value:confidence"),
        (
            block('{"event_type": "x", "summary": "y", "risk_detected": 2}'),
            "bad_type:risk_detected",
        ),
        (
            block('{"event_type": "x", "summary": "y", "operator_action_required": "maybe"}'),
            "bad_type:operator_action_required",
        ),
        (block('{"event_type": "x", "summary": "y", "tags": [{"k": 1}]}'), "bad_type:tags"),
        (
            block('{"event_type": "x", "summary": "y", "artifact_refs": [[1]]}'),
            "bad_type:artifact_refs",
        ),
        (
            block('{"event_type": "x", "summary": "y", "idempotency_key": {}}'),
            "bad_type:idempotency_key",
        ),
        (
            block('{"event_type": "x", "summary": "y", "schema_version": "v1"}'),
            "bad_type:schema_version",
        ),
        (
            block('{"event_type": "x", "summary": "y", "schema_version": 0}'),
            "bad_value:schema_version",
        ),
        (
            block('{"event_type": "x", "summary": "y", "schema_version": "\u00b2"}'),
            "bad_type:schema_version",
        ),
        (
            block('{"event_type": "x", "summary": "y", "schema_version": 2.5}'),
            "bad_type:schema_version",
        ),
        (E + "\n", "stray_end"),
        ("chatter\n  " + E + "  \nchatter\n", "stray_end"),
    ],
)
def test_malformed_input_is_exactly_one_validation_error(stream: str, reason: str) -> None:
    assert one_invalid(stream).reason == reason


def test_nested_begin_reports_the_first_block_and_parses_the_second() -> None:
    stream = f'{B}\n{{"event_type": "lost",\n{B}\n{json.dumps(GOOD)}\n{E}\n'
    first, second = run(stream)
    assert isinstance(first, Invalid)
    assert first.reason == "nested_begin"
    assert first.excerpt == '{"event_type": "lost",'
    assert isinstance(second, Emitted)
    assert second.event_type == "run.completed"


def test_stray_end_after_a_closed_block() -> None:
    results = run(block(json.dumps(GOOD)) + E + "\n")
    assert [type(r) for r in results] == [Emitted, Invalid]
    assert isinstance(results[1], Invalid)
    assert results[1].reason == "stray_end"


def test_excerpt_of_a_huge_invalid_block_is_bounded() -> None:
    inv = one_invalid(block("{" + "x" * 100_000))
    assert inv.reason == "invalid_json"
    assert len(inv.excerpt) == MAX_EXCERPT_CHARS
    assert inv.excerpt.startswith("{xxx")


def test_invalid_payload_is_what_the_validation_error_event_carries() -> None:
    inv = one_invalid(block("[1,"))
    payload = invalid_payload(inv)
    assert payload == {"reason": "invalid_json", "detail": inv.detail, "excerpt": "[1,"}
    assert inv.detail  # a sentence, not empty


# --- size and time bounds -----------------------------------------------------------------


def test_oversize_block_is_one_error_and_the_parser_resyncs() -> None:
    parser = EmissionParser(max_block_bytes=1000)
    body = "".join(f'"line {i}",\n' for i in range(200))  # ~2.4 kB, never closed
    results = parser.feed(f"{B}\n[{body}", 0.0)
    assert [(type(r), getattr(r, "reason", None)) for r in results] == [(Invalid, "oversize")]
    assert isinstance(results[0], Invalid)
    assert results[0].excerpt.startswith('["line 0",')
    assert not parser.in_block
    # What follows the cut is ordinary text again; the next block parses.
    after = parser.feed(f"{E}\n" + block(json.dumps(GOOD)), 0.0)
    assert [getattr(r, "reason", "ok") for r in after] == ["stray_end", "ok"]


@pytest.mark.parametrize(("extra", "expected"), [(0, ["ok"]), (1, ["oversize", "stray_end"])])
def test_size_bound_counts_utf8_bytes_of_the_body(extra: int, expected: list[str]) -> None:
    line = json.dumps({"event_type": "a", "summary": "\u00e9" * 20}, ensure_ascii=False)
    size = len(line.encode()) + 1  # the body line and its newline
    assert size != len(line) + 1
    parser = EmissionParser(max_block_bytes=size + 3 * 3 - extra)
    # Three short lines of padding ("  " each), then the event, then END.
    results = parser.feed(f"{B}\n  \n  \n  \n{line}\n{E}\n", 0.0)
    assert reasons(results) == expected


def test_oversize_single_line_is_cut_and_memory_stays_bounded() -> None:
    parser = EmissionParser(max_block_bytes=64 * 1024)
    results = parser.feed(B + "\n", 0.0)
    tracemalloc.start()
    try:
        chunk = "x" * 65536
        for _ in range(160):  # 10 MiB on one line, no newline
            results += parser.feed(chunk, 0.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024
    assert [getattr(r, "reason", None) for r in results] == ["oversize"]
    # The rest of the giant line is dropped; the next line starts clean.
    assert [type(r) for r in parser.feed("\n" + block(json.dumps(GOOD)), 0.0)] == [Emitted]


@pytest.mark.parametrize(
    "cuts", [[], [5000], [1, 4097, 4098, 5002, 9500, 10030], list(range(0, 10100, 7))]
)
def test_overlong_lines_judged_the_same_whatever_the_chunking(cuts: list[int]) -> None:
    # Lines longer than a sentinel can be are judged before they end; the tail of such a
    # line must not come back as a line of its own, even when it looks like a sentinel.
    tail = "\r\x1b[2K" + E + "\n"
    parser = EmissionParser(max_block_bytes=100)
    head = parser.feed(B + "\n", 0.0)
    stream = "z" * 5000 + tail + "y" * 5000 + "\r\x1b[2K" + B + "\n" + json.dumps(GOOD) + "\n"
    last, results = 0, list(head)
    for cut in [*cuts, len(stream)]:
        results += parser.feed(stream[last:cut], 0.0)
        last = cut
    assert reasons(results) == ["oversize"]
    assert isinstance(results[0], Invalid)
    assert results[0].excerpt == "z" * 99  # cut where the 100-byte budget ran out
    assert not parser.in_block


def test_endless_line_outside_a_block_is_bounded_too() -> None:
    parser = EmissionParser()
    tracemalloc.start()
    try:
        for _ in range(160):
            assert parser.feed("\x1b[31m#" * 8192, 0.0) == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024
    assert [type(r) for r in parser.feed("\n" + block(json.dumps(GOOD)), 0.0)] == [Emitted]


def test_unclosed_block_times_out_once() -> None:
    parser = EmissionParser(max_block_seconds=60)
    assert parser.feed(f'{B}\n{{"event_type": "x",\n', 100.0) == []
    assert parser.check_timeout(159.0) == []
    assert parser.in_block
    results = parser.check_timeout(161.0)
    assert [getattr(r, "reason", None) for r in results] == ["unclosed_timeout"]
    assert isinstance(results[0], Invalid)
    assert results[0].excerpt == '{"event_type": "x",'
    assert not parser.in_block
    assert parser.check_timeout(500.0) == []
    # After the resync a late END is stray, and a new block works.
    late = parser.feed(E + "\n" + block(json.dumps(GOOD)), 600.0)
    assert [getattr(r, "reason", "ok") for r in late] == ["stray_end", "ok"]


def test_late_data_that_closes_the_block_wins_over_the_timeout() -> None:
    parser = EmissionParser(max_block_seconds=60)
    assert parser.feed(f"{B}\n{json.dumps(GOOD)}\n", 0.0) == []
    assert [type(r) for r in parser.feed(E + "\n", 90.0)] == [Emitted]


def test_feed_reports_a_timeout_even_without_an_end() -> None:
    parser = EmissionParser(max_block_seconds=60)
    parser.feed(f"{B}\n", 0.0)
    assert [getattr(r, "reason", None) for r in parser.feed("more body\n", 61.0)] == [
        "unclosed_timeout"
    ]


def test_close_finishes_the_last_line_and_reports_an_open_block() -> None:
    parser = EmissionParser()
    assert parser.feed(f"{B}\n{json.dumps(GOOD)}\n{E}", 0.0) == []  # END not yet terminated
    assert [type(r) for r in parser.close()] == [Emitted]
    parser.feed(f"{B}\n[", 0.0)
    assert [getattr(r, "reason", None) for r in parser.close()] == ["unclosed_eof"]


def test_rebuffering_is_linear() -> None:
    # 200 kB of block fed 64 bytes at a time; quadratic rebuffering takes seconds here.
    body = json.dumps([{**GOOD, "summary": f"event {i}"} for i in range(3000)], indent=1)
    stream = block(body)
    parser = EmissionParser()
    started = time.perf_counter()
    results = []
    for i in range(0, len(stream), 64):
        results += parser.feed(stream[i : i + 64], 0.0)
    assert time.perf_counter() - started < 2.0
    assert len(results) == 3000


# --- chunking never changes the result ----------------------------------------------------

SAMPLE = (
    "\x1b]0;claude\x07\x1b[?25l\u280b Thinking\r\x1b[2K\u2819 Thinking\r\x1b[2K"
    "Done.\r\n"
    "  " + B + "\r\n"
    '  {"event_type": "run.completed", "summary": "\x1b[32mall green\x1b[0m",\r\n'
    '   "confidence": "0.9", "tags": "ci", "extra_field": {"k": [1, 2]}}\r\n'
    "  " + E + "\r\n"
    "chatter with a quoted " + B + " inside\n" + E + "\n" + B + "\n"
    '{"event_type": "x", "summary": "never closed"\n' + B + "\n"
    '[{"event_type": "stale", "summary": "s", "severity": "WARNING"}, 5,\n'
    ' {"event_type": "run.error", "summary": "caf\u00e9 \U0001f600", "risk_detected": 1}]\n'
    + E
    + "\n"
    + B
    + "\n{oops\n"
    + E
    + "\nabc\bd\n"
)
EXPECTED_REASONS = [
    "ok",  # run.completed
    "stray_end",
    "nested_begin",
    "ok",  # stale
    "not_an_object",
    "ok",  # run.error
    "invalid_json",
]


def reasons(results: list[Result]) -> list[str]:
    return [r.reason if isinstance(r, Invalid) else "ok" for r in results]


def test_sample_stream_results() -> None:
    results = run(SAMPLE)
    assert reasons(results) == EXPECTED_REASONS
    first = results[0]
    assert isinstance(first, Emitted)
    assert first.summary == "all green"
    assert first.confidence == 0.9
    assert first.tags == ["ci"]
    assert first.payload == {"_extra": {"extra_field": {"k": [1, 2]}}}


def test_every_split_position_gives_the_same_results() -> None:
    whole = run(SAMPLE)
    for cut in range(len(SAMPLE) + 1):
        assert run(SAMPLE, [cut]) == whole, cut


def test_one_character_at_a_time_gives_the_same_results() -> None:
    assert run(SAMPLE, list(range(len(SAMPLE)))) == run(SAMPLE)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(SAMPLE)), max_size=40))
def test_arbitrary_chunking_gives_the_same_results(cuts: list[int]) -> None:
    assert run(SAMPLE, sorted(cuts)) == run(SAMPLE)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                B,
                E,
                "  " + B + " \r",
                json.dumps(GOOD),
                "[1,",
                '{"event_type": "t", "summary": 2}',
                "\x1b[31mnoise\x1b[0m",
                "x" * 300,
                "y" * 5000 + "\r" + E,
                "",
            ]
        ),
        max_size=30,
    ),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=20),
)
def test_arbitrary_streams_chunk_independently_with_bounds(
    lines: list[str], cuts: list[int]
) -> None:
    # A small byte bound makes the oversize cut land at arbitrary places too.
    stream = "\n".join(lines) + "\n"
    cuts = sorted(c for c in cuts if c <= len(stream))

    def feed(positions: list[int]) -> list[Result]:
        parser = EmissionParser(max_block_bytes=700)
        out: list[Result] = []
        last = 0
        for cut in [*positions, len(stream)]:
            out += parser.feed(stream[last:cut], 0.0)
            last = cut
        return out + parser.close()

    assert feed(cuts) == feed([])


# --- coercion -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "given", "expected"),
    [
        ("confidence", "0.8", 0.8),
        ("confidence", " 80% ", 0.8),
        ("confidence", 1, 1.0),
        ("confidence", None, None),
        ("operator_action_required", "true", True),
        ("operator_action_required", "False", False),
        ("operator_action_required", 1, True),
        ("risk_detected", 0, False),
        ("risk_detected", "yes", True),
        ("tags", "deploy", ["deploy"]),
        ("tags", ["a", 2, "a", " ", "b"], ["a", "2", "b"]),
        ("summary", 42, "42"),
        ("summary", 2.5, "2.5"),
        ("summary", "  padded  ", "padded"),
        ("summary", "\x1b[31mred\x1b[0m alert", "red alert"),
        ("severity", "WARNING", Severity.WARNING),
        ("severity", " Error ", Severity.ERROR),
        ("severity", "warn", Severity.WARNING),
        ("artifact_refs", "out/report.html", ["out/report.html"]),
        ("idempotency_key", 1234, "1234"),
        ("dedupe_key", "", None),
        ("schema_version", "1", 1),
    ],
)
def test_unambiguous_wrong_types_are_coerced(field: str, given: object, expected: object) -> None:
    result = emitted({**GOOD, field: given})
    assert getattr(result, field) == expected
    assert "_notes" not in result.payload


@pytest.mark.parametrize(
    ("field", "given", "expected", "note"),
    [
        ("severity", "urgent", Severity.INFO, 'unknown severity "urgent"'),
        ("severity", 3, Severity.INFO, "unknown severity 3"),
        ("confidence", 80, 1.0, "clamped"),
        ("confidence", -0.5, 0.0, "clamped"),
    ],
)
def test_repairs_leave_a_note(field: str, given: object, expected: object, note: str) -> None:
    result = emitted({**GOOD, field: given})
    assert getattr(result, field) == expected
    assert any(note in n for n in result.payload["_notes"])


def test_summary_is_truncated() -> None:
    result = emitted({**GOOD, "summary": "s" * (MAX_SUMMARY_CHARS + 50)})
    assert len(result.summary) == MAX_SUMMARY_CHARS
    assert result.summary.endswith("…")
    assert "truncated" in result.payload["_notes"][0]


def test_unknown_fields_are_kept_in_the_payload() -> None:
    result = emitted({**GOOD, "payload": {"pr": 12}, "ts": 5, "author": {"name": "bot"}})
    assert result.payload == {"pr": 12, "_extra": {"ts": 5, "author": {"name": "bot"}}}


def test_agent_values_under_reserved_payload_keys_are_not_lost() -> None:
    result = emitted({**GOOD, "severity": "bogus", "payload": {"_notes": "mine", "_extra": 1}})
    assert result.payload["_agent_notes"] == "mine"
    assert result.payload["_agent_extra"] == 1
    assert result.payload["_notes"] == ['unknown severity "bogus" recorded as info']


def test_non_object_payload_is_wrapped() -> None:
    result = emitted({**GOOD, "payload": "free text"})
    assert result.payload["_value"] == "free text"
    assert "payload was a string" in result.payload["_notes"][0]


def test_links_good_kept_bad_dropped_with_notes() -> None:
    result = emitted(
        {
            **GOOD,
            "links": [
                {"type": "Blocks", "target": "task-7"},
                {"type": "relates", "target": "task-8"},
                {"type": "spawned"},
                "task-9",
                {"type": "caused_by", "target": 12},
            ],
        }
    )
    assert result.links == [
        EventLink(type=LinkType.BLOCKS, target="task-7"),
        EventLink(type=LinkType.CAUSED_BY, target="12"),
    ]
    assert [n.split(":")[0] for n in result.payload["_notes"]] == [
        "link 1 dropped",
        "link 2 dropped",
        "link 3 dropped",
    ]


def test_links_that_are_not_a_list_are_dropped_with_a_note() -> None:
    result = emitted({**GOOD, "links": "task-1"})
    assert result.links == []
    assert "links dropped" in result.payload["_notes"][0]
    single = emitted({**GOOD, "links": {"type": "resolves", "target": "t"}})
    assert single.links == [EventLink(type=LinkType.RESOLVES, target="t")]


@pytest.mark.parametrize(
    ("extra", "attention"),
    [
        ({}, False),
        ({"severity": "warning"}, True),
        ({"severity": "critical"}, True),
        ({"severity": "debug"}, False),
        ({"operator_action_required": True}, True),
        ({"risk_detected": "true"}, True),
        ({"event_type": "my.custom", "severity": "critical", "risk_detected": True}, False),
    ],
)
def test_attention_candidate(extra: dict[str, Any], attention: bool) -> None:
    assert emitted({**GOOD, **extra}).attention_candidate is attention


def test_unknown_event_type_is_accepted() -> None:
    result = emitted({"event_type": "deploy.finished", "summary": "v2 live"})
    assert (result.event_type, result.attention_candidate) == ("deploy.finished", False)


def test_numbers_too_long_to_print_do_not_crash_coercion() -> None:
    result = coerce({**GOOD, "summary": 10**5000})
    assert isinstance(result, Emitted)
    bad = coerce({**GOOD, "confidence": [10**5000]})
    assert isinstance(bad, Invalid)
    assert bad.reason == "bad_type:confidence"


def test_coerce_rejects_non_objects() -> None:
    result = coerce(["a"])
    assert isinstance(result, Invalid)
    assert result.reason == "not_an_object"


def test_parse_block_alone() -> None:
    assert reasons(parse_block(json.dumps([GOOD, GOOD]))) == ["ok", "ok"]


# --- whatever the agent writes, an Emitted fits the wire Event ----------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.one_of(
    json_values,
    st.sampled_from(["true", "0", "0.5", "45%", "WARN", "error", "", "blocks", " x "]),
    st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["blocks", "nope", 3]), "target": json_values}
        )
    ),
)
FIELDS = [
    "event_type",
    "summary",
    "tags",
    "payload",
    "severity",
    "confidence",
    "operator_action_required",
    "risk_detected",
    "artifact_refs",
    "idempotency_key",
    "dedupe_key",
    "links",
    "schema_version",
    "unknown",
]


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), field_values) | json_values)
def test_coerce_never_raises_and_emitted_fits_the_wire_event(obj: object) -> None:
    result = coerce(obj)
    if isinstance(result, Invalid):
        assert result.reason and result.detail
        assert len(result.excerpt) <= MAX_EXCERPT_CHARS
        return
    # The mapping the host agent uses: every coerced emission must fit the wire contract.
    event = to_event(result, tenant="acme", host="h1", session="coder", boot_id="b1", ts=0.0)
    decoded = codec.decode(codec.encode(event), Event)  # enforces the wire constraints
    assert decoded.summary == result.summary
    assert decoded.links == result.links
    assert result.confidence is None or 0.0 <= result.confidence <= 1.0


# --- parse_lines: a block's body as rows read off a screen ---------------------------------


def test_parse_lines_rejoins_a_word_wrapped_line() -> None:
    """A TUI wraps a long JSON line at a blank and drops the blank: joined again with one."""
    rows = ['{"event_type": "note", "summary": "one two', 'three four"}']
    [result] = parse_lines(rows)
    assert isinstance(result, Emitted) and result.summary == "one two three four"
    assert "_notes" not in result.payload


def test_parse_lines_keeps_json_printed_over_lines_and_fences() -> None:
    rows = [
        "```json",
        "[",
        '  {"event_type": "a", "summary": "x"},',
        '  {"event_type": "b",',
        '   "summary": "y"}',
        "]",
        "```",
    ]
    assert [r.event_type for r in parse_lines(rows) if isinstance(r, Emitted)] == ["a", "b"]


def test_parse_lines_reports_unreadable_rows_once_as_drawn() -> None:
    [bad] = parse_lines(['{"event_type": "a", "summary": "cut', "short"])
    assert isinstance(bad, Invalid) and bad.reason == "invalid_json"
    assert bad.excerpt == '{"event_type": "a", "summary": "cut\nshort'
