"""What the controller API answers, computed from fleet state. Pure: no NATS here."""

from __future__ import annotations

from controller.state import FleetState, HostEntry, problem_indexes
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


def _candidate_keys(state: FleetState, req: PsRequest) -> list[tuple[str, str]]:
    if req.tenant is not None and req.host is not None:
        key = (req.tenant, req.host)
        return [key] if key in state.hosts else []
    keys = state.sorted_keys()
    if req.host is not None:
        return [k for k in keys if k[1] == req.host]
    return keys


def _rows(state: FleetState, entry: HostEntry, req: PsRequest) -> list[PsRow]:
    """The host's rows that pass the filters. With --problems on an ok host only its flagged
    sessions are looked at (cached per heartbeat), which keeps the fleet overview cheap."""
    if req.problems and entry.state is HostState.OK:
        flagged = problem_indexes(entry)
        if not flagged:
            return []
        wanted = set(flagged)
        rows = [r for i, r in enumerate(state.host_rows(entry)) if i in wanted]
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
        return len(problem_indexes(entry))
    return len(_rows(state, entry, req))


def ps_page(state: FleetState, req: PsRequest, max_rows: int) -> PsReply:
    """One page of `fleet ps` rows, whole hosts at a time, in (tenant, host) order.

    The cursor is an index into the sorted host list; ``total`` and the state counts are
    computed on the first page only (cursor 0), since recounting 500,000 rows per page
    would make a full listing quadratic.
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
        counts = {s.value: 0 for s in HostState}
        total = 0
        for k in keys:
            entry = state.hosts[k]
            if _host_matches(entry, req):
                counts[entry.state.value] += 1
                if next_cursor is not None:
                    total += _count(entry, req, state)
        if next_cursor is None:
            total = len(rows)
    return PsReply(
        rows=rows,
        total=total,
        next_cursor=next_cursor,
        hosts_by_state=counts,
        generated_at=state.wall(),
    )
