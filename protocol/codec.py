"""The one pair of functions every message goes through, and their one error type.

Messages are msgspec Structs tagged with a ``msg`` field, so one ``decode`` can dispatch on
the kind of message and a reader of the raw JSON sees what it is.
"""

from __future__ import annotations

from typing import Any, TypeVar, overload

import msgspec

T = TypeVar("T")
Data = bytes | bytearray | memoryview | str

SCHEMA_VERSION = 1

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="msg"):
    """Base of every wire message: says what it is (``msg``) and which version."""

    schema_version: int = SCHEMA_VERSION


class DecodeError(ValueError):
    """Bytes that are not a valid message of the expected type."""


def encode(message: Any) -> bytes:
    return _encoder.encode(message)


@overload
def decode(data: Data, type: type[T]) -> T: ...


# A union of message kinds (`A | B`) is a type form `type[T]` cannot name (as in msgspec's own
# signatures): the caller annotates what it gets.
@overload
def decode(data: Data, type: Any) -> Any: ...


def decode(data: Data, type: Any) -> Any:
    """Decode one message of ``type``; a message from a newer schema than this build knows is
    refused, since its fields may mean what this build cannot tell."""
    decoder = _decoders.get(type)
    if decoder is None:
        decoder = _decoders[type] = msgspec.json.Decoder(type)
    try:
        message: Any = decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodeError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise DecodeError(f"not UTF-8: {exc}") from None
    version = getattr(message, "schema_version", SCHEMA_VERSION)
    if version > SCHEMA_VERSION:
        kind = getattr(getattr(message, "__struct_config__", None), "tag", None) or "message"
        raise DecodeError(
            f"{kind} has schema_version {version}, newer than this build understands "
            f"({SCHEMA_VERSION}): upgrade agentfleet"
        )
    return message
