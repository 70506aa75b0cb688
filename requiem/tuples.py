"""`named_tuple`: typing.NamedTuple's class syntax, without importing typing or collections.

Every cold `requiem exec run` pays for each module it imports. typing costs ~14M instructions
(callgrind) and collections ~2 ms a start (it brings operator, keyword and reprlib, and defines
a dozen classes the engine never uses); the engine needs neither. The value types of the core
are written as annotated classes and turned into tuples by this decorator: fields in annotation
order, class-level values as defaults, methods kept, and namedtuple's `_fields`,
`_field_defaults`, `_make`, `_replace` and `_asdict`.
"""

from __future__ import annotations

# operator's C half: the operator module itself costs ~0.5 ms a start.
from _operator import itemgetter

TYPE_CHECKING = False  # typing is for checkers only
if TYPE_CHECKING:
    from typing import Any, Iterable

_NOT_COPIED = ("__dict__", "__weakref__")


class _Record(tuple):
    """What every named_tuple class shares: namedtuple's helpers over `_fields`."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _field_defaults: dict[str, Any] = {}

    @classmethod
    def _make(cls, values: Iterable[Any]) -> Any:
        made = tuple.__new__(cls, values)
        if len(made) != len(cls._fields):
            raise TypeError(f"{cls.__name__} takes {len(cls._fields)} values, got {len(made)}")
        return made

    def _replace(self, **changes: Any) -> Any:
        replaced = self._make(map(changes.pop, self._fields, self))
        if changes:
            raise ValueError(f"{type(self).__name__} has no fields {list(changes)!r}")
        return replaced

    __replace__ = _replace  # copy.replace(), from Python 3.13

    def _asdict(self) -> dict[str, Any]:
        return dict(zip(self._fields, self))

    def __getnewargs__(self) -> tuple[Any, ...]:
        return tuple(self)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, self))
        return f"{type(self).__name__}({shown})"


def named_tuple(cls: type) -> type:
    """The tuple class of cls's annotated fields, with cls's defaults, methods and docstring."""
    fields = tuple(cls.__dict__.get("__annotations__", {}))
    defaults: dict[str, Any] = {}
    for name in fields:
        if name in cls.__dict__:
            defaults[name] = cls.__dict__[name]
        elif defaults:
            raise TypeError(f"{cls.__name__}.{name}: a field without a default follows one with")
    body = {key: value for key, value in cls.__dict__.items()
            if key not in fields and key not in _NOT_COPIED}
    body.update(__slots__=(), _fields=fields, _field_defaults=defaults, __match_args__=fields,
                __new__=_constructor(cls.__qualname__, fields, tuple(defaults.values())))
    for index, name in enumerate(fields):
        body[name] = property(itemgetter(index), doc=f"Field {index}.")
    return type(cls.__name__, (_Record,), body)


def _constructor(qualname: str, fields: tuple[str, ...], defaults: tuple[Any, ...]) -> Any:
    """`__new__(cls, <fields>)`, compiled as namedtuple compiles its own: a generic
    `*args, **kwargs` version costs every construction (several a run) ~1 us more."""
    for name in fields:
        if not name.isidentifier() or name.startswith("_"):
            raise ValueError(f"{qualname}: {name!r} cannot be a field name")
    parameters = "".join(f", {name}" for name in fields)
    values = "".join(f"{name}, " for name in fields)
    new = eval(f"lambda _cls{parameters}: _tuple_new(_cls, ({values}))",
               {"_tuple_new": tuple.__new__, "__builtins__": {}})
    new.__defaults__ = defaults or None
    new.__name__ = "__new__"
    new.__qualname__ = f"{qualname}.__new__"
    return new
