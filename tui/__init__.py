"""The Requiem operator TUI (Textual)."""
