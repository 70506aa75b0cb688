"""Strict JSON parsing and RFC 8785 canonical output."""

from __future__ import annotations

import pytest

from requiem import canonical
from requiem.errors import RequiemError


def code_of(data: bytes | str) -> str:
    with pytest.raises(RequiemError) as info:
        canonical.loads(data)
    return info.value.code


@pytest.mark.parametrize(
    "doc",
    [b'{"a":1,"a":2}', b'{"x":{"b":1,"b":1}}', b'[{"k":[{"z":0,"z":0}]}]'],
)
def test_duplicate_keys_at_any_depth_are_rejected(doc: bytes) -> None:
    assert code_of(doc) == "json_duplicate_key"


@pytest.mark.parametrize(
    "doc",
    [
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'[-Infinity]',
        b'{"a": 1,}',
        b'[1,]',
        b'{"a": 1} trailing',
        b'{"a": 1}{"b": 2}',
        b'\xff\xfe{}',
        b'{"a": "\xc3\x28"}',
        b'{"a": "\\ud800"}',
        b'{"\\udfff": 1}',
        b"'single'",
        b"",
        b"\xef\xbb\xbf{}",
        b"[" * 100 + b"]" * 100,
        b"[" * 100000,
        b'{"big": 9007199254740993}',
        b'{"huge": 1e400}',
        b'[-1e999]',
    ],
)
def test_non_rfc8259_input_is_a_parse_error(doc: bytes) -> None:
    assert code_of(doc) == "json_parse_error"


def test_parse_error_carries_the_position() -> None:
    with pytest.raises(RequiemError) as info:
        canonical.loads(b'{\n "a": tru\n}')
    assert info.value.detail["line"] == 2
    assert "position" in info.value.detail


def test_document_over_one_mebibyte_is_quota_exceeded() -> None:
    big = b'{"a":"' + b"x" * (1 << 20) + b'"}'
    assert code_of(big) == "quota_exceeded"


def test_document_at_the_limit_is_accepted() -> None:
    doc = b'{"a":"' + b"x" * ((1 << 20) - 8) + b'"}'
    assert len(doc) == 1 << 20
    assert canonical.loads(doc)["a"].startswith("x")


def test_valid_json_round_trips() -> None:
    value = canonical.loads('{"b": [1, 2.5, "é", null, true], "a": {"c": -0.0}}')
    assert value == {"b": [1, 2.5, "é", None, True], "a": {"c": 0.0}}


def test_canonical_bytes_follow_rfc8785() -> None:
    # Keys sorted by UTF-16 code units, no whitespace, ES number formatting.
    value = {"\u20ac": 1, "\U0001f600": 2, "\ufb33": 3, "a": [1.0, 1e21, 0.1, "\u0007"]}
    out = canonical.dumps(value)
    assert out == (
        '{"a":[1,1e+21,0.1,"\\u0007"],"\u20ac":1,"\U0001f600":2,"\ufb33":3}'.encode("utf-8")
    )


def test_canonical_bytes_ignore_input_key_order() -> None:
    assert canonical.dumps(canonical.loads('{"z":1,"a":2}')) == canonical.dumps({"a": 2, "z": 1})


@pytest.mark.parametrize("value", [
    {"b": 1, "a": [True, None, "x\u0007\n\"\\"], "é": {"z": -5}},
    {"float": 1.0, "big": 1e21, "small": 5e-7},
    {"\U0001f600": 1, "\ufb33": 2},
    [9007199254740991, -9007199254740991, 0, "ü\u2028"],
])
def test_fast_path_matches_rfc8785(value: object) -> None:
    import rfc8785

    assert canonical.dumps(value) == rfc8785.dumps(value)


def test_lone_surrogates_cannot_be_canonicalised() -> None:
    with pytest.raises(RequiemError):
        canonical.dumps({"a": "\ud800"})


def test_fast_path_agrees_with_rfc8785_on_random_values() -> None:
    import random

    import rfc8785

    rng = random.Random(1)
    # Strings that look like numbers, floats, long integers, keys outside the BMP, escapes.
    texts = "ab:,.[1e😀é\"\\\n"

    def value(depth: int = 0) -> object:
        roll = rng.random()
        if depth > 3 or roll < 0.3:
            kind = rng.random()
            if kind < 0.25:
                return rng.randint(-10**17, 10**17) if rng.random() < 0.2 else rng.randint(-9, 9)
            if kind < 0.4:
                return rng.choice([0.5, 1e16, -0.0, 3.0, 1e-7, 123.456])
            if kind < 0.5:
                return rng.choice([True, False, None])
            return "".join(rng.choice(texts) for _ in range(rng.randint(0, 8)))
        if roll < 0.65:
            return {"".join(rng.choice("abé\ufb33😀𝄞:,1.") for _ in range(rng.randint(0, 4))):
                    value(depth + 1) for _ in range(rng.randint(0, 4))}
        return [value(depth + 1) for _ in range(rng.randint(0, 4))]

    for _ in range(3000):
        sample = value()
        try:
            expected: object = rfc8785.dumps(sample)
        except rfc8785.CanonicalizationError:
            expected = RequiemError
        try:
            got: object = canonical.dumps(sample)
        except RequiemError:
            got = RequiemError
        assert got == expected, sample
