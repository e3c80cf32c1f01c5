"""The agentfleet wire contract: messages, subjects, ids. Pure: no I/O, no networking."""

from protocol.codec import SCHEMA_VERSION, DecodeError, Message, decode, encode

__all__ = ["SCHEMA_VERSION", "DecodeError", "Message", "decode", "encode"]
