"""What the controller API answers, computed from fleet state. Pure: no NATS here."""

from __future__ import annotations

from controller.fleet.state import FleetState, HostEntry, HostKey
from protocol.api import HostState, PsReply, PsRequest, PsRow


def _row_matches(row: PsRow, req: PsRequest) -> bool:
    if req.problems and row.host_state is HostState.OK and not row.flags:
        return False
    if req.state is not None:
        session_state = row.session.state.value if row.session else None
        if req.state not in (row.host_state.value, session_state):
            return False
    return True


def _host_matches(entry: HostEntry, req: PsRequest) -> bool:
    return (req.tenant is None or entry.tenant == req.tenant) and (
        req.host is None or entry.host == req.host
    )


def _candidate_keys(state: FleetState, req: PsRequest) -> list[HostKey]:
    """The hosts a listing walks, in order; the cursor is an index into this list.

    `--host` and `--problems` come from the state's indexes, so they never walk the fleet.
    """
    if req.host is not None:
        keys = state.keys_named(req.host)
        if req.problems:
            keys = [k for k in keys if k in state.problem_hosts]
    elif req.problems:
        keys = state.problem_keys()
    else:
        return state.sorted_keys()
    if req.tenant is not None:
        keys = [k for k in keys if k[0] == req.tenant]
    return keys


def _rows(state: FleetState, entry: HostEntry, req: PsRequest) -> list[PsRow]:
    """The host's rows that pass the filters; with --problems an ok host shows only its
    flagged sessions (known since its heartbeat)."""
    if req.problems and entry.state is HostState.OK:
        rows = state.host_rows(entry, entry.flagged)
    else:
        rows = state.host_rows(entry)
    return [r for r in rows if _row_matches(r, req)]


def _count(entry: HostEntry, req: PsRequest, state: FleetState) -> int:
    """How many rows of this host pass the filters, building none where it can."""
    if req.state is None and not req.problems:
        return max(1, len(entry.sessions))
    if req.state is None:
        if entry.state is not HostState.OK:
            return max(1, len(entry.sessions))
        return len(entry.flagged)
    return len(_rows(state, entry, req))


def _totals(state: FleetState, req: PsRequest, keys: list[HostKey]) -> tuple[int, dict[str, int]]:
    """(rows over all pages, hosts per state) for the first page of a listing."""
    if req.host is None:
        counts = state.host_counts(req.tenant)
    else:
        counts = {s.value: 0 for s in HostState}
        for key in state.keys_named(req.host):
            if req.tenant is None or key[0] == req.tenant:
                counts[state.hosts[key].state.value] += 1
    if req.state is None and not req.problems and req.host is None:
        return state.row_total(req.tenant), counts
    # Problem hosts and one host id are few; only a --state filter walks every host.
    total = 0
    for key in keys:
        entry = state.hosts[key]
        if _host_matches(entry, req):
            total += _count(entry, req, state)
    return total, counts


def ps_page(state: FleetState, req: PsRequest, max_rows: int) -> PsReply:
    """One page of `fleet ps` rows, whole hosts at a time, in (tenant, host) order.

    The cursor is an index into the listing's host list (every host, the problem hosts, or
    the hosts with one id); ``total`` and the state counts come with the first page only
    (cursor 0): they are kept as hosts change, so no page walks the fleet to count.
    """
    limit = max(1, min(req.limit, max_rows))
    keys = _candidate_keys(state, req)
    rows: list[PsRow] = []
    index = req.cursor
    while index < len(keys) and len(rows) < limit:
        entry = state.hosts.get(keys[index])
        index += 1
        if entry is None or not _host_matches(entry, req):
            continue
        rows.extend(_rows(state, entry, req))
    next_cursor = index if index < len(keys) else None
    total = -1
    counts: dict[str, int] = {}
    if req.cursor == 0:
        total, counts = _totals(state, req, keys)
        if next_cursor is None:
            total = len(rows)
    return PsReply(
        rows=rows,
        total=total,
        next_cursor=next_cursor,
        hosts_by_state=counts,
        generated_at=state.wall(),
    )
