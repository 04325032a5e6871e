"""_requested_range: the RFC 9110 byte range a blob GET asks for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.domain.errors import RangeNotSatisfiable
from dockyard.http.registry import _requested_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-0", (0, 0)),
        ("bytes=0-99", (0, 99)),
        ("bytes=10-", (10, 99)),
        ("bytes=99-", (99, 99)),
        ("bytes=50-500", (50, 99)),
        ("bytes=-1", (99, 99)),
        ("bytes=-30", (70, 99)),
        ("bytes=-1000", (0, 99)),
        (" bytes=1-2 ", (1, 2)),
    ],
)
def test_satisfiable_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert _requested_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=", "bytes=-", "items=0-1", "bytes=a-b", "0-1", "bytes 0-1"])
def test_unparsable_or_multiple_ranges_mean_whole_blob(header: str) -> None:
    assert _requested_range(header, 100) is None


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=100-", 100),
        ("bytes=200-300", 100),
        ("bytes=-0", 100),
        ("bytes=5-4", 100),
        ("bytes=0-", 0),
        ("bytes=-5", 0),
    ],
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as caught:
        _requested_range(header, size)
    assert caught.value.headers == {"Content-Range": f"bytes */{size}"}
    assert caught.value.http_status == 416


def reference_range(first: int | None, last: int | None, size: int) -> tuple[int, int] | None:
    """RFC 9110 section 14.1.2, written out: None when unsatisfiable."""
    if first is None:
        assert last is not None
        return (size - min(last, size), size - 1) if last > 0 and size > 0 else None
    if first >= size or (last is not None and last < first):
        return None
    return first, size - 1 if last is None else min(last, size - 1)


@given(
    st.integers(min_value=0, max_value=10_000),
    st.one_of(st.none(), st.integers(min_value=0, max_value=12_000)),
    st.one_of(st.none(), st.integers(min_value=0, max_value=12_000)),
)
def test_ranges_agree_with_rfc_9110(size: int, first: int | None, last: int | None) -> None:
    if first is None and last is None:
        return
    header = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    expected = reference_range(first, last, size)
    if expected is None:
        with pytest.raises(RangeNotSatisfiable):
            _requested_range(header, size)
    else:
        assert _requested_range(header, size) == expected
