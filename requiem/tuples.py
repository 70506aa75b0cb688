"""`named_tuple`: typing.NamedTuple's class syntax without importing typing.

Every cold `requiem exec run` pays for each module it imports, and typing costs ~14M
instructions (callgrind) that the engine otherwise never needs (dataclasses cost more). The
value types of the core are written as annotated classes and turned into namedtuples by this
decorator: fields in annotation order, class-level values as defaults, methods kept.
"""

from __future__ import annotations

from collections import namedtuple

_NOT_COPIED = ("__dict__", "__weakref__")


def named_tuple(cls: type) -> type:
    """The namedtuple of cls's annotated fields, with cls's defaults, methods and docstring."""
    names = list(cls.__dict__.get("__annotations__", {}))
    defaults = []
    for name in names:
        if name in cls.__dict__:
            defaults.append(cls.__dict__[name])
        elif defaults:
            raise TypeError(f"{cls.__name__}.{name}: a field without a default follows one with")
    base = namedtuple(cls.__name__, names, defaults=defaults, module=cls.__module__)
    body = {key: value for key, value in cls.__dict__.items()
            if key not in names and key not in _NOT_COPIED}
    body["__slots__"] = ()
    return type(cls.__name__, (base,), body)
