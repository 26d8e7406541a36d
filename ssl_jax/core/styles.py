"""The four WikiChurches style classes and the three rules that turn a style list into labels.

The study classifies four architectural styles, given in the data as Wikidata QIDs. An image
or church carries a *list* of style QIDs; the original study used three different rules
(SPEC R3.4, R9.7), all provided here so each output can say which one it used:

- ``"first"`` — the dataset label: the FIRST listed style, if it is one of the four, else
  ``None`` (a later mapped style is ignored). Used for classification and fine-tuning.
- ``"first_mapped"`` — the first listed style that is one of the four (``None`` if none is).
- ``"all"`` — every mapped style, in listed order without repeats (style breakdowns: an
  image tagged Romanesque and Gothic counts for both).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

STYLE_QIDS: tuple[str, ...] = ("Q46261", "Q176483", "Q236122", "Q840829")
STYLE_NAMES: tuple[str, ...] = ("Romanesque", "Gothic", "Renaissance", "Baroque")
STYLE_MAPPING: dict[str, int] = {q: i for i, q in enumerate(STYLE_QIDS)}
NUM_STYLES = len(STYLE_QIDS)

StyleRule = Literal["first", "first_mapped", "all"]


def style_label(styles: Iterable[str], rule: Literal["first", "first_mapped"] = "first") -> int | None:
    """One class index (0..3) from a list of style QIDs, or None (see the module docstring)."""
    styles = list(styles)
    if rule == "first":
        return STYLE_MAPPING.get(styles[0]) if styles else None
    if rule == "first_mapped":
        return next((STYLE_MAPPING[s] for s in styles if s in STYLE_MAPPING), None)
    raise ValueError(f"style rule must be 'first' or 'first_mapped', got {rule!r}")


def style_labels(styles: Iterable[str]) -> tuple[int, ...]:
    """Every mapped style's class index, in listed order, without repeats (the "all" rule)."""
    out: list[int] = []
    for s in styles:
        i = STYLE_MAPPING.get(s)
        if i is not None and i not in out:
            out.append(i)
    return tuple(out)


def style_name(label: int | None) -> str | None:
    """Class index → style name ("Romanesque", ...); None stays None."""
    if label is None:
        return None
    if not 0 <= label < NUM_STYLES:
        raise ValueError(f"style label must be in 0..{NUM_STYLES - 1}, got {label}")
    return STYLE_NAMES[label]
