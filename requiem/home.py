"""The state directory: where the CAS, the spool, the history and the config live."""

from __future__ import annotations

import os
from pathlib import Path

from requiem.tuples import named_tuple


@named_tuple
class Home:
    """One Requiem home directory and the paths inside it."""

    root: Path
    cas_root: Path

    @classmethod
    def resolve(cls, home: str | None = None, cas: str | None = None) -> "Home":
        """--home, else $REQUIEM_HOME, else ./.requiem; --cas overrides the CAS root."""
        root = Path(home or os.environ.get("REQUIEM_HOME") or ".requiem").absolute()
        return cls(root=root, cas_root=Path(cas).absolute() if cas else root / "cas")

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    @property
    def history_path(self) -> Path:
        return self.root / "history.duckdb"

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"
