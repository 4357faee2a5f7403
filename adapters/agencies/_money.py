"""Amounts of money as the agencies show them to people (never floating point)."""

from __future__ import annotations

__all__ = ["format_uzs"]


def format_uzs(amount_minor: int, currency: str = "UZS") -> str:
    """``amount_minor`` (tiyin) as ``1 234 567.89 UZS``."""
    sign = "-" if amount_minor < 0 else ""
    whole, minor = divmod(abs(amount_minor), 100)
    return f"{sign}{whole:,}.{minor:02d} {currency}".replace(",", " ")
