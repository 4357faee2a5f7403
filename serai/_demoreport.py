"""What the demo prints: numbered sections, notes, and checks that count failures."""

from __future__ import annotations

__all__ = ["Report"]


class Report:
    """The demo's printed trace; each check is ``[ok]`` or ``[FAILED]``."""

    def __init__(self) -> None:
        self.checks = 0
        self.failures: list[str] = []
        self._section = 0

    def section(self, title: str) -> None:
        self._section += 1
        print(f"\n{self._section}. {title}", flush=True)

    def check(self, ok: bool, text: str) -> bool:
        """Print and count one check; returns ``ok``."""
        self.checks += 1
        if not ok:
            self.failures.append(text)
        print(f"  [{'ok' if ok else 'FAILED'}] {text}", flush=True)
        return ok

    def note(self, text: str) -> None:
        print(f"  - {text}", flush=True)

    def line(self, text: str) -> None:
        print(f"    {text}", flush=True)
