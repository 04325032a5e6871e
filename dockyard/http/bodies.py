"""Reading request bodies on every door: bad framing is the client's error (4xx), never an unexpected one.

What the server (Granian 2.8, on hyper) does with framing, and so what is left to the app:
* `Transfer-Encoding` whose last coding is not `chunked`: hyper answers 400 itself (RFC 9112 §6.3), the app
  never sees the request.
* `Transfer-Encoding: gzip, chunked`: hyper removes the chunked framing and hands the app the still-gzipped
  bytes, with the header as sent. Nothing here decodes gzip, and storing the coded bytes as the content would
  be wrong, so any coding but `chunked` is refused with 501 (RFC 9112 §6.1: a server that receives a transfer
  coding it does not understand SHOULD answer 501).
* A chunk size that is not hex (`zz`, `-3`), a chunk without its CRLF, a body shorter than its
  Content-Length: hyper's body stream fails, and Granian's ASGI `receive` turns that failure into an
  `http.disconnect` message (src/asgi/io.rs: `Some(Err(err))` -> `http.disconnect`), which Starlette raises
  as `ClientDisconnect`. It cannot be told apart from a client that went away, so a body that ends that way
  is answered 400: the connection is still open when framing was bad, and a client that left reads nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request

from dockyard.domain.errors import DockyardError, ErrorKind

# The one transfer coding the app can take: the server removes it.
_UNDERSTOOD_CODINGS: Final = frozenset({"chunked"})


class TransferCodingNotImplemented(DockyardError):
    kind = ErrorKind("UNSUPPORTED", 501, "NotImplemented", "the request's transfer coding is not implemented")


class BodyIncomplete(DockyardError):
    kind = ErrorKind(
        "BLOB_UPLOAD_INVALID", 400, "SerializationException", "the request body is malformed or ended early"
    )


def check_transfer_coding(headers: Headers) -> None:
    """Refuse (501) a request body in any transfer coding but `chunked`."""
    codings = [
        coding.strip().lower()
        for value in headers.getlist("transfer-encoding")
        for coding in value.split(",")
        if coding.strip()
    ]
    unknown = [coding for coding in codings if coding not in _UNDERSTOOD_CODINGS]
    if unknown:
        raise TransferCodingNotImplemented(
            f"transfer coding {unknown[0][:40]!r} is not implemented; send the body with Content-Length or "
            "Transfer-Encoding: chunked only",
            detail={"transferEncoding": ", ".join(codings)[:200]},
        )


async def body_chunks(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; malformed framing (or a client gone mid-body) raises BodyIncomplete."""
    check_transfer_coding(request.headers)
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise BodyIncomplete(
            "the request body ended before its framing said it would: malformed chunked encoding (chunk size "
            "not hexadecimal, missing CRLF) or fewer bytes than Content-Length"
        ) from None
