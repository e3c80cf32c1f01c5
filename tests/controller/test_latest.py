"""Parked heartbeats: the newest per host wins, hosts are served in order of arrival, and a
handler that fails on one message does not stop the rest."""

from __future__ import annotations

import anyio
import pytest
from nats.aio.msg import Msg

from controller.fleet.latest import Latest


def msg(subject: str, data: bytes) -> Msg:
    return Msg(_client=None, subject=subject, data=data)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_newest_per_subject_in_order_of_first_arrival() -> None:
    latest = Latest()
    for subject, data in [("a", b"1"), ("b", b"1"), ("a", b"2"), ("c", b"1"), ("a", b"3")]:
        await latest.park(msg(subject, data))
    assert len(latest) == 3 and latest.superseded == 2
    assert latest.holds("a") and latest.holds("c") and not latest.holds("d")
    seen: list[tuple[str, bytes]] = []
    first_three, done = anyio.Event(), anyio.Event()

    async def handle(m: Msg) -> None:
        seen.append((m.subject, m.data))
        if m.subject == "b":
            raise ValueError("a broken message")  # logged, the next ones still handled
        if len(seen) == 3:
            first_three.set()
        if len(seen) == 4:
            done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(latest.run, handle)
        with anyio.fail_after(5):
            await first_three.wait()
            assert len(latest) == 0  # all served: the runner waits for the next park
            assert not latest.holds("a")
            await latest.park(msg("d", b"1"))
            await done.wait()
        tg.cancel_scope.cancel()
    assert seen == [("a", b"3"), ("b", b"1"), ("c", b"1"), ("d", b"1")]
    assert len(latest) == 0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_controller_does_not_judge_a_host_whose_heartbeat_it_holds(tmp_path) -> None:
    """The liveness loop asks the intake: a host overdue only because its parked heartbeat
    has not been processed yet stays ok; an overdue host with none goes suspect."""
    from dataclasses import replace

    from controller.config import ControllerConfig
    from controller.fleet.state import Transition
    from controller.parts import assemble
    from protocol import subjects
    from protocol.api import HostState
    from tests.controller.test_state import hb, make

    parts = assemble(
        ControllerConfig(tenants=["acme"], data_dir=str(tmp_path), liveness_tick_s=0.01)
    )
    state, clock = make()
    hearing = replace(parts.hearing, state=state)  # the daemon's wiring, on a clock we move
    state.on_heartbeat(hb(host="held"))
    state.on_heartbeat(hb(host="silent"))
    clock.now += 15.1  # both past 3 intervals of 5 s
    await parts.heartbeats.park(msg(subjects.heartbeat("acme", "held"), b"{}"))
    judged: list[Transition] = []
    silent_suspect = anyio.Event()

    async def record(transition: Transition | None) -> None:
        if transition is not None:
            judged.append(transition)
            if transition.host == "silent":
                silent_suspect.set()

    hearing.record = record  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(hearing.liveness_loop)
        with anyio.fail_after(5):
            await silent_suspect.wait()
        tg.cancel_scope.cancel()
    assert [(t.host, t.new) for t in judged] == [("silent", HostState.SUSPECT)]
    assert state.hosts[("acme", "held")].state is HostState.OK


@pytest.mark.anyio
async def test_processing_yields_to_the_socket_reader_every_slice() -> None:
    """However many heartbeats wait, processing hands the loop back every SLICE_S, so the
    reader can take in the socket and newer heartbeats can supersede waiting ones."""
    import time

    from controller.fleet.latest import SLICE_S

    latest = Latest()
    for i in range(100):
        await latest.park(msg(f"h{i}", b""))
    handled = 0
    each = SLICE_S / 2

    async def handle(_m: Msg) -> None:
        nonlocal handled
        end = time.monotonic() + each  # a heartbeat that costs half a slice
        while time.monotonic() < end:
            pass
        handled += 1

    between: list[int] = []  # heartbeats handled between two turns of the other task
    async with anyio.create_task_group() as tg:
        tg.start_soon(latest.run, handle)
        with anyio.fail_after(10):
            seen = 0
            while handled < 100:
                await anyio.lowlevel.checkpoint()
                between.append(handled - seen)
                seen = handled
        tg.cancel_scope.cancel()
    assert sum(between) == 100
    assert max(between) <= 3  # two within the slice, and the one that crossed its end


async def _rounds(
    latest: Latest, gaps: list[float], handled: list[str], busy: bool = False
) -> None:
    """Park one heartbeat per round: each after the previous round is over and ``gap``
    seconds more. With ``busy``, another task is ready to run all along."""

    async def handle(m: Msg) -> None:
        handled.append(m.subject)

    async def spin() -> None:
        while True:
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(latest.run, handle)
        if busy:
            tg.start_soon(spin)
        with anyio.fail_after(10):
            for i, gap in enumerate(gaps):
                await anyio.sleep(gap)
                await latest.park(msg(f"h{i}", b""))
                # Until its round is over, so that the next park starts another. Polled by
                # sleeping, not by checkpoints: a task at a checkpoint is ready to run.
                while latest.rounds <= i:  # noqa: ASYNC110 (a counter, no event to wait on)
                    await anyio.sleep(0.001)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_heartbeats_in_quick_succession_hold_the_loop_between_rounds() -> None:
    """Coalesced reads: a round that began within hold_s of the last one's end is followed
    by a hold, so the socket gathers a batch for the next read; a sparse fleet never is."""
    held: list[float] = []
    dense = Latest(hold_s=1.0, hold=held.append)  # 1 s: every gap here is far shorter
    handled: list[str] = []
    await _rounds(dense, [0, 0, 0], handled)
    assert handled == ["h0", "h1", "h2"]
    assert held == [1.0, 1.0]  # the first round had no round before it

    held.clear()
    sparse = Latest(hold_s=0.01, hold=held.append)
    handled.clear()
    await _rounds(sparse, [0, 0.05, 0.05], handled)  # 50 ms apart: slower than one per 10 ms
    assert handled == ["h0", "h1", "h2"] and held == []


@pytest.mark.anyio
async def test_no_hold_while_another_task_is_ready() -> None:
    """An API request read with the heartbeats does not wait behind a hold."""
    held: list[float] = []
    handled: list[str] = []
    await _rounds(Latest(hold_s=1.0, hold=held.append), [0, 0, 0], handled, busy=True)
    assert handled == ["h0", "h1", "h2"] and held == []


@pytest.mark.anyio
async def test_a_controller_behind_is_never_held() -> None:
    """While heartbeats wait, rounds go on; the hold comes only once the parking is empty."""
    held: list[int] = []
    handled = 0
    latest = Latest(hold_s=1.0, hold=lambda _s: held.append(handled))
    done = anyio.Event()

    async def handle(_m: Msg) -> None:
        nonlocal handled
        handled += 1
        if handled < 50:  # each heartbeat handled brings a new one, as when far behind
            await latest.park(msg(f"n{handled}", b""))
        else:
            done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(latest.run, handle)
        with anyio.fail_after(10):
            await latest.park(msg("first", b""))
            await done.wait()
            while len(latest):
                await anyio.lowlevel.checkpoint()
        tg.cancel_scope.cancel()
    assert handled == 50 and held == []  # one long round; the first had none before it


def test_outside_an_asyncio_loop_nothing_is_held() -> None:
    from controller.fleet.latest import loop_idle

    assert loop_idle() is False  # no running asyncio loop: another backend, never held
