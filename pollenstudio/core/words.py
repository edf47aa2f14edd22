"""Counts in words: "1 image", "2 images" (the app said "1 images", "1 samples")."""

from __future__ import annotations

IRREGULAR = {"taxon": "taxa", "focal stack": "focal stacks", "grain": "grains", "box": "boxes"}


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``n`` and ``noun`` in the right number: ``plural(1, "image")`` = "1 image",
    ``plural(3, "taxon")`` = "3 taxa"; ``many`` gives an irregular plural."""
    if n == 1:
        return f"{n} {noun}"
    return f"{n} {many or IRREGULAR.get(noun) or noun + 's'}"


__all__ = ["plural"]
