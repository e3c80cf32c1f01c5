"""The controller's attention and live-feed verbs: attention.list, attention.act, feed."""

from __future__ import annotations

from controller.attention.feed import FeedFull
from controller.attention.live import LiveFleet
from controller.attention.queue import UnknownItem
from protocol.api import ApiError, ErrorCode
from protocol.attention import (
    AttentionActReply,
    AttentionActRequest,
    AttentionListReply,
    AttentionListRequest,
    FeedReply,
    FeedRequest,
)


class AttentionApi:
    def __init__(self, live: LiveFleet) -> None:
        self.live = live

    async def list(self, req: AttentionListRequest) -> AttentionListReply:
        queue = self.live.queue
        return AttentionListReply(
            items=queue.listing(req.tenant, req.host, req.include_all),
            open=queue.open_count(),
            generated_at=self.live.state.wall(),
        )

    async def act(self, req: AttentionActRequest) -> AttentionActReply | ApiError:
        missing = ApiError(code=ErrorCode.NOT_FOUND, message=f"no attention item {req.id!r}")
        item = self.live.queue.find(req.id)  # or by another replica's id for it
        if item is None or (req.tenant is not None and item.cond.tenant != req.tenant):
            return missing  # another tenant's item is none of the caller's business
        try:
            change = self.live.queue.act(req.id, req.action, req.snooze_s, req.by)
        except UnknownItem:
            return missing
        await self.live.changed([change])
        return AttentionActReply(item=change.item)

    async def feed(self, req: FeedRequest) -> FeedReply | ApiError:
        if not req.deliver.startswith("_INBOX"):
            return ApiError(code=ErrorCode.BAD_REQUEST, message="deliver must be an inbox subject")
        try:
            return self.live.feed.add(req)
        except FeedFull as exc:
            return ApiError(code=ErrorCode.BAD_REQUEST, message=str(exc))
