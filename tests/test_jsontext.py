"""The store's JSON text: fast, and as exact as the standard library."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from hypothesis import given
from hypothesis import strategies as st

from wfsched.httpjson import parse_json
from wfsched.jsontext import dumpb, dumps, loads

# Unicode category Cs, the surrogates: not text that UTF-8 (so JSON text) can hold.
SURROGATES: tuple[Literal["Cs"]] = ("Cs",)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: past 64 bits orjson alone would lose digits
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=SURROGATES)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_a_value_reads_back_exactly(value: Any) -> None:
    assert loads(dumps(value)) == value
    assert loads(dumpb(value)) == value
    assert loads(json.dumps(value)) == value


def test_integers_past_64_bits_keep_every_digit() -> None:
    big = 2**70 + 1
    assert loads(f'{{"id": {big}}}') == {"id": big}
    assert loads(f"[{-big}]".encode()) == [-big]
    assert dumps({"id": big}) == f'{{"id":{big}}}'
    assert parse_json(f'{{"id": {big}, "n": 1.5}}'.encode()) == {"id": big, "n": 1.5}


class Odd:
    def __str__(self) -> str:
        return "odd"


def test_values_json_cannot_hold_are_written_as_text_like_the_standard_library() -> None:
    when = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)
    assert loads(dumps({"at": when})) == {"at": str(when)}
    assert loads(dumps({1: "a"})) == {"1": "a"}
    assert loads(dumps({"x": Odd()})) == {"x": "odd"}


def test_text_is_compact_utf8() -> None:
    assert dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'
    assert dumpb({"a": "é"}) == '{"a":"é"}'.encode()
