"""JSON through the C accelerator alone gives byte for byte what the json package gives."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from requiem.json_text import Scanner, compact, pretty


def random_document(rnd: random.Random, depth: int = 0) -> object:
    kind = rnd.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rnd.choice([True, False])
    if kind == 2:
        return rnd.randrange(-10**12, 10**12)
    if kind == 3:
        return rnd.choice([0.1, -2.5, 1e300, 3.0, 1e-7, -0.0])
    if kind in (4, 5):
        return "".join(rnd.choice('aé"\\\n\x01\u2028€😀/ \x7f') for _ in range(rnd.randrange(6)))
    if kind == 6:
        return [random_document(rnd, depth + 1) for _ in range(rnd.randrange(4))]
    if kind == 7:
        return tuple(random_document(rnd, depth + 1) for _ in range(rnd.randrange(3)))
    return {rnd.choice(["a", "B", "é", "😀", "", f"k{rnd.randrange(9)}"]): random_document(rnd, depth + 1)
            for _ in range(rnd.randrange(4))}


def test_pretty_and_compact_match_the_json_package() -> None:
    rnd = random.Random(20261206)
    for _ in range(3000):
        value = random_document(rnd)
        assert pretty(value) == json.dumps(value, indent=2, ensure_ascii=False)
        assert compact(value) == json.dumps(value, sort_keys=True, separators=(",", ":"),
                                            ensure_ascii=False)
        assert compact(value, sort_keys=False) == json.dumps(value, separators=(",", ":"),
                                                             ensure_ascii=False)


def test_pretty_writes_non_finite_floats_and_non_string_keys_as_json_does() -> None:
    value = {"n": [float("nan"), float("inf"), float("-inf")], 7: 2, 2.5: 3, None: 4, True: 5}
    assert pretty(value) == json.dumps(value, indent=2, ensure_ascii=False)


def test_what_json_cannot_encode_fails_the_same_way() -> None:
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        pretty({"a": {1}})
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        compact([{1}])
    with pytest.raises(ValueError):
        compact([float("nan")])


@pytest.mark.parametrize("text", ['  {"a": [1, 2.5, "x", null, true]}\n', "[]", " 7 ", '"\\u00e9"'])
def test_the_scanner_reads_what_json_reads(text: str) -> None:
    assert Scanner().loads(text) == json.loads(text)


@pytest.mark.parametrize("text", ["", "   ", "\ufeff{}", '{"a": }', '{"a" 1}', "[1,]", "[1] 2", '{"a": 1}}',
                                  '"unterminated', "tru", "[1, 2", '{"a": 1,\n "b": x}'])
def test_the_scanner_reports_what_json_reports(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        Scanner().loads(text)
    assert (got.value.msg, got.value.pos, got.value.lineno, got.value.colno) == (
        expected.value.msg, expected.value.pos, expected.value.lineno, expected.value.colno)


def test_the_scanner_reports_syntax_errors_before_json_is_loaded() -> None:
    # The C scanner finds JSONDecodeError through sys.modules; a cold CLI has not loaded json.
    code = ("import sys\nfrom requiem.json_text import Scanner\nassert 'json.decoder' not in sys.modules\n"
            "try:\n    Scanner().loads('{\"a\" 1}')\nexcept ValueError as exc:\n"
            "    print(type(exc).__name__, exc.msg, exc.pos)\n")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "JSONDecodeError Expecting ':' delimiter 5"


def test_the_scanner_passes_pairs_and_constants_to_its_hooks() -> None:
    seen: list[str] = []
    scanner = Scanner(object_pairs_hook=lambda pairs: pairs, parse_constant=lambda name: seen.append(name))
    assert scanner.loads('{"b": 1, "a": NaN, "b": 2}') == [("b", 1), ("a", None), ("b", 2)]
    assert seen == ["NaN"]


@pytest.fixture
def with_orjson():
    """compact_bytes through orjson for one test (a long batch's setting), then back."""
    import requiem.json_text as json_text

    pytest.importorskip("orjson")
    saved = json_text._orjson_dumps, json_text._ORJSON_SORTED, json_text._ORJSON_IN_ORDER
    assert json_text.use_orjson()
    yield
    json_text._orjson_dumps, json_text._ORJSON_SORTED, json_text._ORJSON_IN_ORDER = saved


def test_canonical_bytes_are_the_same_whichever_encoder_writes_them(with_orjson: None) -> None:
    import requiem.json_text as json_text
    from requiem import canonical

    rnd = random.Random(20261206)
    documents = [random_document(rnd) for _ in range(2000)]

    def canonical_or_error(value: object) -> object:
        try:
            return canonical.dumps(value)
        except Exception as exc:  # the same refusal either way counts as the same answer
            return type(exc).__name__

    with_it = [canonical_or_error(d) for d in documents]
    json_text._orjson_dumps = None
    without = [canonical_or_error(d) for d in documents]
    assert with_it == without


def test_what_orjson_refuses_is_encoded_as_before(with_orjson: None) -> None:
    from collections import namedtuple

    from requiem.json_text import compact_bytes

    pair = namedtuple("pair", "a b")
    for value in ({"a": "\ud800"}, [2**70], {"p": pair(1, 2)}, {1: "x"}):
        assert compact_bytes(value, errors="surrogatepass") == compact(value).encode(
            "utf-8", "surrogatepass")


def test_dates_are_refused_with_orjson_as_without(with_orjson: None) -> None:
    import datetime

    from requiem.json_text import compact_bytes

    with pytest.raises(TypeError):
        compact_bytes({"at": datetime.datetime(2026, 12, 6)})
