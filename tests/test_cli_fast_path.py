"""`exec run` and `exec batch` skip argparse for their plain shapes, meaning exactly what
argparse would."""

from __future__ import annotations

import pytest

from requiem.cli import _plain_exec, _plain_health
from requiem.parser import build_parser

PLAIN = [
    ["exec", "run", "--request", "r.json", "--out", "o.json"],
    ["exec", "run", "--out", "o.json", "--request", "r.json"],
    ["--home", "h", "exec", "run", "--request", "r.json", "--out", "o.json"],
    ["--home", "h", "exec", "run", "--request", "r.json", "--out", "o.json", "--engine", "dual"],
    ["exec", "run", "--engine", "rust", "--request", "exec", "--out", "run"],
    ["exec", "batch", "--requests", "r.jsonl", "--out", "o.jsonl"],
    ["--home", "h", "exec", "batch", "--out", "o.jsonl", "--requests", "r.jsonl", "--jobs", "3"],
    ["exec", "batch", "--requests", "r.jsonl", "--out", "o.jsonl", "--engine", "dual", "--jobs",
     "0"],
]
ODD = [
    ["exec", "run", "--request=r.json", "--out", "o.json"],
    ["exec", "run", "--request", "r.json"],
    ["exec", "run", "--request", "r.json", "--out"],
    ["exec", "run", "--request", "r.json", "--out", "o.json", "--home", "h"],
    ["exec", "run", "--request", "a", "--request", "b", "--out", "o.json"],
    ["exec", "run", "--request", "r.json", "--out", "o.json", "--engine", "bogus"],
    ["exec", "run", "--request", "r.json", "--out", "o.json", "extra"],
    ["exec", "run", "--request", "r.json", "--out", "o.json", "-h"],
    ["exec", "batch", "--request", "r.jsonl", "--out", "o.jsonl"],
    ["exec", "batch", "--requests", "r.jsonl", "--out", "o.jsonl", "--jobs", "two"],
    ["exec", "batch", "--requests", "r.jsonl", "--out", "o.jsonl", "--jobs", "\u0663"],
    ["exec", "batch", "--requests", "r.jsonl", "--out", "o.jsonl", "--jobs", "-1"],
    ["exec", "batch", "--requests", "r.jsonl", "--out", "o.jsonl", "--jobs", "9" * 5000],
    ["exec", "run", "--request", "r.json", "--out", "o.json", "--jobs", "2"],
    ["exec", "batch", "--requests", "r.jsonl"],
    ["exec", "replay", "--request", "r.json", "--out", "o.json"],
    ["run", "exec", "--request", "r.json", "--out", "o.json"],
    ["--request", "r.json", "exec", "run", "--out", "o.json"],
    ["exec", "run", "--request", "-", "--out", "o.json"],
    [],
]


@pytest.mark.parametrize("argv", PLAIN, ids=" ".join)
def test_plain_exec_parses_as_argparse_does(argv: list[str]) -> None:
    fast = _plain_exec(argv)
    slow = build_parser(argv).parse_args(argv)
    assert fast is not None
    assert set(vars(slow)) <= set(vars(fast)), "the fast path leaves an argument out"
    for name in vars(slow):
        assert getattr(fast, name) == getattr(slow, name), name


@pytest.mark.parametrize("argv", ODD, ids=lambda argv: " ".join(argv) or "nothing")
def test_every_other_shape_is_left_to_argparse(argv: list[str]) -> None:
    assert _plain_exec(argv) is None


@pytest.mark.parametrize("argv", [["health"], ["--home", "h", "health"]], ids=" ".join)
def test_plain_health_parses_as_argparse_does(argv: list[str]) -> None:
    fast = _plain_health(argv)
    slow = build_parser(argv).parse_args(argv)
    for name in ("command", "home", "handler"):
        assert getattr(fast, name) == getattr(slow, name), name


@pytest.mark.parametrize("argv", [["health", "--help"], ["health", "extra"], ["--home", "health"],
                                  ["--home", "-x", "health"], ["health", "--home", "h"]],
                         ids=" ".join)
def test_other_health_shapes_are_left_to_argparse(argv: list[str]) -> None:
    assert _plain_health(argv) is None
