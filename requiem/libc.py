"""Calling a libc function without the ctypes package (~2 ms of every cold start)."""

from __future__ import annotations

_functions: dict[str, object] = {}


def function(name: str) -> object:
    """libc's `name` (OSError or AttributeError when this libc has none)."""
    found = _functions.get(name)
    if found is None:
        try:
            import _ctypes

            found = _ctypes.dlsym(_ctypes.dlopen(None), name)
        except ImportError:
            import ctypes

            found = getattr(ctypes.CDLL(None), name)
        _functions[name] = found
    return found


def call(name: str, *args: int) -> int:
    """libc's `name` called with int arguments (the GIL let go meanwhile); its int result.

    Through ctypes' C core when it can, the package as the fallback. The errno is not kept.
    """
    found = function(name)
    if isinstance(found, int):  # an address from _ctypes.dlsym
        import _ctypes

        return _ctypes.call_function(found, args)
    return found(*args)  # type: ignore[operator]
