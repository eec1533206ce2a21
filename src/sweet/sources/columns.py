"""Which columns hold the texts and the label.

Detection (when the columns are not given) compares names case-insensitively with the usual names below:

* a **pair** is used when both of its columns are there; a **single** text name counts only when it is not part
  of a pair that is there (so ``question, sentence`` is one pair, not a pair and a single text);
* exactly one candidate (a pair or a single name) must remain, else the data is refused with the columns it has
  and the flag that chooses (``--text-column`` / ``--text-columns A,B``);
* the **label** is the one column among the label names (not a text column), else ``--label-column``.

Given columns must exist exactly as written (case-sensitive). Duplicate column names are refused.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import SweetError

SINGLE_TEXT_NAMES = ("text", "sentence", "content", "review", "body", "document", "utterance", "query")
PAIR_TEXT_NAMES = (
    ("premise", "hypothesis"),
    ("sentence1", "sentence2"),
    ("question1", "question2"),
    ("question", "sentence"),
    ("text_a", "text_b"),
)
LABEL_NAMES = ("label", "labels", "target", "class", "category", "intent")

TEXT_FLAGS = "pass --text-column NAME (or --text-columns A,B for a pair)"
LABEL_FLAG = "pass --label-column NAME"


def quoted(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def has_columns(columns: Sequence[str]) -> str:
    return "the data has columns: " + (", ".join(columns) if columns else "(none)")


def _prefix(where: str | None) -> str:
    return f"{where}: " if where else ""


def _matches(columns: Sequence[str], name: str) -> list[str]:
    return [c for c in columns if c.lower() == name]


def check_unique(columns: Sequence[str], where: str | None = None) -> None:
    seen, duplicated = set(), []
    for c in columns:
        if c in seen and c not in duplicated:
            duplicated.append(c)
        seen.add(c)
    if duplicated:
        raise SweetError(
            f"{_prefix(where)}column {quoted(duplicated)} appears more than once ({has_columns(columns)}); "
            "give each column its own name"
        )


def _detect_texts(columns: list[str]) -> tuple[str, ...]:
    candidates: list[tuple[str, ...]] = []
    in_pairs: set[str] = set()
    for first, second in PAIR_TEXT_NAMES:
        for a in _matches(columns, first):
            for b in _matches(columns, second):
                candidates.append((a, b))
                in_pairs.update((a, b))
    for name in SINGLE_TEXT_NAMES:
        candidates += [(c,) for c in _matches(columns, name) if c not in in_pairs]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise SweetError(f"no text column found; {has_columns(columns)}; {TEXT_FLAGS}")
    shown = ", ".join(" + ".join(f"'{c}'" for c in cand) for cand in candidates)
    raise SweetError(f"several possible text columns: {shown}; {has_columns(columns)}; {TEXT_FLAGS}")


def _detect_label(columns: list[str], text_columns: tuple[str, ...]) -> str:
    candidates = [c for name in LABEL_NAMES for c in _matches(columns, name) if c not in text_columns]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise SweetError(f"no label column found; {has_columns(columns)}; {LABEL_FLAG}")
    raise SweetError(f"several possible label columns: {quoted(candidates)}; {has_columns(columns)}; {LABEL_FLAG}")


def detect_columns(
    column_names: Sequence[str],
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    *,
    where: str | None = None,
) -> tuple[tuple[str, ...], str]:
    """The text columns (one, or two for pairs) and the label column; given ones are checked, others detected.

    ``where`` (a file or split) starts every error message."""
    columns = list(column_names)
    try:
        check_unique(columns)
        if text_columns is not None:
            text_columns = (text_columns,) if isinstance(text_columns, str) else tuple(text_columns)
            if len(text_columns) not in (1, 2):
                raise SweetError(
                    f"give one text column (or two for a pair), got {len(text_columns)}: {quoted(text_columns)}"
                )
            if len(set(text_columns)) != len(text_columns):
                raise SweetError(f"the two text columns of a pair must differ, got {quoted(text_columns)}")
            missing = [c for c in text_columns if c not in columns]
            if missing:
                what = "text column" if len(missing) == 1 else "text columns"
                raise SweetError(f"{what} {quoted(missing)} not found; {has_columns(columns)}")
        if label_column is not None:
            if label_column not in columns:
                raise SweetError(f"label column '{label_column}' not found; {has_columns(columns)}")
            if text_columns is not None and label_column in text_columns:
                raise SweetError(f"column '{label_column}' cannot be both a text column and the label column")
        if text_columns is None:
            others = [c for c in columns if c != label_column]
            text_columns = _detect_texts(others)
        if label_column is None:
            label_column = _detect_label(columns, text_columns)
    except SweetError as exc:
        raise SweetError(f"{_prefix(where)}{exc}") from None
    return text_columns, label_column


def columns_note(text_columns: tuple[str, ...], label_column: str, detected_text: bool, detected_label: bool) -> str | None:
    """The note that says which detected columns are used (None when both were given)."""
    if not (detected_text or detected_label):
        return None
    texts = f"text column '{text_columns[0]}'" if len(text_columns) == 1 else f"text columns {quoted(text_columns)}"
    parts = [f"{texts} ({'detected' if detected_text else 'given'})",
             f"label column '{label_column}' ({'detected' if detected_label else 'given'})"]
    flags = [f for f, on in (("--text-column", detected_text), ("--label-column", detected_label)) if on]
    return f"using {' and '.join(parts)}; pass {' or '.join(flags)} to choose others"
