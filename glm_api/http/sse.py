"""Server-sent events: `data: <json>` frames, the optional `[DONE]`, errors mid-stream.

An error after the first byte can no longer change the status, so it is sent as one last
event `data: {"error": {...}}` and the stream ends. Closing the event iterator (client
gone, or finished) closes the engine's iterator beneath it, which aborts the request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse

from glm_api.http.errors import error_for

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def frame(data: str) -> str:
    return f"data: {data}\n\n"


async def _frames(events: AsyncIterator[str], send_done: bool) -> AsyncIterator[str]:
    try:
        async for data in events:
            yield frame(data)
    except Exception as exc:  # after the headers: report in-band, then end the stream
        _, body = error_for(exc)
        yield frame(body.model_dump_json())
        return
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    if send_done:
        yield frame("[DONE]")


def sse_response(events: AsyncIterator[str], send_done: bool) -> StreamingResponse:
    """OpenAI streams end with `data: [DONE]`; the legacy /chat-stream does not."""
    return StreamingResponse(
        _frames(events, send_done), media_type="text/event-stream", headers=SSE_HEADERS
    )
