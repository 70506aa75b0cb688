"""Calling a libc function without the ctypes package (~2 ms of every cold start)."""

from __future__ import annotations

_functions: dict[str, object] = {}


def call(name: str, *args: int) -> int:
    """libc's `name` called with int arguments (the GIL let go meanwhile); its int result.

    Through ctypes' C core when it can, the package as the fallback. OSError or
    AttributeError when this libc has no such function.
    """
    try:
        import _ctypes

        function = _functions.get(name)
        if function is None:
            function = _functions[name] = _ctypes.dlsym(_ctypes.dlopen(None), name)
        return _ctypes.call_function(function, args)
    except ImportError:
        import ctypes

        return getattr(ctypes.CDLL(None), name)(*args)
