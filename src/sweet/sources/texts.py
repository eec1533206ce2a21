"""Checking the texts of one part, vectorised with ``pyarrow.compute``.

A text is refused (or, with ``drop_invalid``, its row skipped) when it is missing (null), not a string, empty, or
blank: a text is blank when it has no character outside the Unicode categories Z* (spaces), Cc (controls) and
Cf (format characters such as the zero-width space U+200B or the byte-order mark U+FEFF) and the other
default-ignorable code points (variation selectors, Hangul fillers): the rule of :func:`sweet.data.is_blank`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .files import nonstring_mask
from .part import Raw

#: Matches a character that makes a text non-blank (RE2 syntax, as pyarrow.compute uses): anything but spaces,
#: controls, format characters and the other default-ignorable code points that :func:`sweet.data.is_blank` counts
#: as blank (combining grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian and other variation
#: selectors): one rule for training data, evaluation data and ``predict`` input.
VISIBLE = (r"[^\p{Z}\p{Cc}\p{Cf}\x{034F}\x{115F}\x{1160}\x{17B4}\x{17B5}\x{180B}-\x{180D}\x{180F}\x{3164}"
           r"\x{FFA0}\x{FE00}-\x{FE0F}\x{E0100}-\x{E01EF}]")


def is_string_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def to_bool(array) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)


def show(value: Any) -> str:
    """A short rendering of a value for a message."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class TextCheck:
    column: str
    array: pa.ChunkedArray  # the strings; null where the value is missing or not a string
    missing: np.ndarray  # null (or, in JSON, no such field)
    nonstring: np.ndarray
    blank: np.ndarray  # empty or blank
    original: pa.ChunkedArray | list  # the values as read, for messages

    @property
    def invalid(self) -> np.ndarray:
        return self.missing | self.nonstring | self.blank

    def reason(self, i: int) -> str:
        """Why row ``i`` (0-based) is invalid."""
        if self.missing[i]:
            return f"no text in column '{self.column}' (null or missing)"
        if self.nonstring[i]:
            value = self.original[i] if isinstance(self.original, list) else self.original[i].as_py()
            return f"the text in column '{self.column}' is not a string: {show(value)}"
        if self.array[i].as_py() == "":
            return f"empty text in column '{self.column}'"
        return f"blank text in column '{self.column}' (only spaces or invisible characters)"


def check_text(raw: Raw, column: str) -> TextCheck:
    array = raw.table.column(column)
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    n = len(array)
    original: pa.ChunkedArray | list = array
    missing = to_bool(pc.is_null(array))
    if column in raw.mixed:
        original = raw.mixed[column]
        nonstring = nonstring_mask(original)
        missing &= ~nonstring
    elif is_string_type(array.type):
        nonstring = np.zeros(n, dtype=bool)
    else:  # numbers, lists, ...: every value that is there is not a string
        nonstring = ~missing
        array = pa.chunked_array([pa.nulls(n, pa.large_string())])
    if pa.types.is_string_view(array.type):
        array = array.cast(pa.large_string())
    visible = pc.fill_null(pc.match_substring_regex(array, VISIBLE), True)
    blank = ~to_bool(visible)
    return TextCheck(column, array, missing, nonstring, blank, original)
