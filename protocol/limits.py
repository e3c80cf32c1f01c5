"""Largest message accepted per subject kind (the server's max_payload bounds them all).

Events also get their limit as the stream's max_msg_size, so JetStream refuses an oversize
event before it is stored; the host agent never produces one (it turns it into a
validation_error first)."""

from __future__ import annotations

from protocol.subjects import Kind

PAYLOAD_LIMITS: dict[Kind, int] = {
    Kind.HB: 1024 * 1024,  # a snapshot of every session of a busy host
    Kind.LC: 16 * 1024,
    Kind.EVT: 256 * 1024,
    Kind.OUT: 256 * 1024,
    Kind.CMD: 256 * 1024,
}
