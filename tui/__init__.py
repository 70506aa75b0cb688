"""The Requiem operator TUI: `requiem-tui [--home DIR] [--refresh SECONDS]`."""

from requiem.tui.app import RequiemApp, main

__all__ = ["RequiemApp", "main"]
