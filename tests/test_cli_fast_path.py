"""`exec run` skips argparse for its plain shape, and means exactly what argparse would."""

from __future__ import annotations

import pytest

from requiem.cli import _plain_exec_run, _plain_health
from requiem.parser import build_parser

PLAIN = [
    ["exec", "run", "--request", "r.json", "--out", "o.json"],
    ["exec", "run", "--out", "o.json", "--request", "r.json"],
    ["--home", "h", "exec", "run", "--request", "r.json", "--out", "o.json"],
    ["--home", "h", "exec", "run", "--request", "r.json", "--out", "o.json", "--engine", "dual"],
    ["exec", "run", "--engine", "rust", "--request", "exec", "--out", "run"],
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
    ["exec", "batch", "--requests", "r.jsonl", "--out", "o.jsonl"],
    ["run", "exec", "--request", "r.json", "--out", "o.json"],
    ["--request", "r.json", "exec", "run", "--out", "o.json"],
    ["exec", "run", "--request", "-", "--out", "o.json"],
    [],
]


@pytest.mark.parametrize("argv", PLAIN, ids=" ".join)
def test_plain_exec_run_parses_as_argparse_does(argv: list[str]) -> None:
    fast = _plain_exec_run(argv)
    slow = build_parser(argv).parse_args(argv)
    assert fast is not None
    for name in ("command", "exec_command", "home", "request", "out", "engine", "handler"):
        assert getattr(fast, name) == getattr(slow, name), name


@pytest.mark.parametrize("argv", ODD, ids=lambda argv: " ".join(argv) or "nothing")
def test_every_other_shape_is_left_to_argparse(argv: list[str]) -> None:
    assert _plain_exec_run(argv) is None


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
