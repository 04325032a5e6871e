"""page_size: the `n` of tag and catalog listings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.domain.errors import PaginationNumberInvalid
from dockyard.domain.images import MAX_PAGE, page_size


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (None, MAX_PAGE),
        ("", MAX_PAGE),
        ("0", 0),
        ("1", 1),
        ("007", 7),
        ("1000", 1000),
        ("1001", 1000),
        (str(2**63 - 1), MAX_PAGE),
        ("0" * 5000 + "7", 7),
    ],
)
def test_page_size(requested: str | None, expected: int) -> None:
    assert page_size(requested) == expected


# Beyond 64 bits a count is refused as Distribution refuses it (and int() raises beyond 4300 digits).
@pytest.mark.parametrize(
    "requested",
    ["-1", "abc", "1.5", " 5", "5 ", "+5", "0x10", "1e3", "²", "¹⁰", str(2**63), "99999999999999999999999", "9" * 5000],
)
def test_bad_page_size_is_pagination_number_invalid(requested: str) -> None:
    with pytest.raises(PaginationNumberInvalid):
        page_size(requested)


@given(st.text(max_size=6))
def test_page_size_is_clamped_or_refused(requested: str) -> None:
    try:
        size = page_size(requested)
    except PaginationNumberInvalid:
        assert requested and not (requested.isascii() and requested.isdigit())
    else:
        assert 0 <= size <= MAX_PAGE
        assert size == (min(int(requested), MAX_PAGE) if requested else MAX_PAGE)
