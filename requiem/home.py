"""The state directory: where the CAS, the spool, the history and the config live."""

from __future__ import annotations

import os

from requiem.tuples import named_tuple

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from pathlib import Path


def _absolute(path: str) -> str:
    """path made absolute against the working directory, as Path.absolute() does (no normpath)."""
    path = path.rstrip("/") or "/"
    return path if os.path.isabs(path) else os.path.join(os.getcwd(), path)


def _path(location: str) -> Path:
    from pathlib import Path

    return Path(location)


@named_tuple
class Home:
    """One Requiem home directory and the paths inside it.

    Held as strings (the `*_location` names): a cold `exec run` never imports pathlib, which
    with urllib.parse and ipaddress costs ~3 ms. The Path views import it when first used.
    """

    root_location: str
    cas_location: str

    @classmethod
    def resolve(cls, home: str | None = None, cas: str | None = None) -> "Home":
        """--home, else $REQUIEM_HOME, else ./.requiem; --cas overrides the CAS root."""
        root = _absolute(home or os.environ.get("REQUIEM_HOME") or ".requiem")
        return cls(root_location=root,
                   cas_location=_absolute(cas) if cas else os.path.join(root, "cas"))

    @property
    def spool_location(self) -> str:
        return os.path.join(self.root_location, "spool")

    @property
    def config_location(self) -> str:
        return os.path.join(self.root_location, "config.json")

    @property
    def root(self) -> Path:
        return _path(self.root_location)

    @property
    def cas_root(self) -> Path:
        return _path(self.cas_location)

    @property
    def spool_dir(self) -> Path:
        return _path(self.spool_location)

    @property
    def history_path(self) -> Path:
        return self.root / "history.duckdb"

    @property
    def config_path(self) -> Path:
        return _path(self.config_location)
