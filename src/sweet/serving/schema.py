"""The ``/predict`` request and response bodies as pydantic models, and the one place that turns a request that
does not fit them into the server's own error (status and one-line message, as listed in docs/errors.md).

FastAPI validates a request against :attr:`RequestSchema.model` (``{"texts": [...]}``, or ``{"pairs": [[a, b],
...]}`` for a pair task, with an optional ``threshold`` in [0, 1] and ``policy``), publishes it in the OpenAPI schema,
and raises :class:`fastapi.exceptions.RequestValidationError` for a request that does not fit. The app hands that
to :meth:`RequestSchema.explain`, which picks the first problem in a fixed order (the shape of the body, unknown
fields, the texts field, the threshold's and policy's types, their values, then the items) and returns the status
and message. Messages about values have one owner each: the threshold's range is
:func:`sweet.policies.check_threshold`'s, an unknown policy is :meth:`Predictor.get_policy
<sweet.predictor.Predictor.get_policy>`'s, a bad item is :meth:`Predictor.examples
<sweet.predictor.Predictor.examples>`'s; this module asks them rather than writing its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..errors import SweetError, one_line
from ..thresholds import POLICY_NAMES, check_threshold

PolicyName = Literal[POLICY_NAMES]  # type: ignore[valid-type]  # the names of sweet.policies.POLICIES (torch-free)


class ErrorBody(BaseModel):
    """Every error the server answers: one line."""

    error: str = Field(description="What was wrong, in one line.")


class Prediction(BaseModel):
    label: str = Field(description="The predicted label's name.")
    label_id: int = Field(description="The predicted label's index.")
    exit_layer: int = Field(description="The layer whose exit answered.")
    confidence: float = Field(description="Calibrated max class probability at that exit.")
    score: float | None = Field(None, description="The policy's exit score (only for a policy other than "
                                "confidence).")


class PredictResponse(BaseModel):
    predictions: list[Prediction] = Field(description="One answer per item, in request order.")


class _RequestBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float | None = Field(None, ge=0.0, le=1.0, strict=True,
                                    description="Exit threshold (default: the server's --threshold).")
    policy: PolicyName | None = Field(None, description="Exit policy (default: the server's --policy).")


class Refusal(Exception):
    """A request the server refuses: the status, the one-line message of ``{"error": ...}``, and the ``reason``
    label of ``sweet_request_errors_total``."""

    def __init__(self, status: int, message: str, reason: str = "bad_request"):
        super().__init__(message)
        self.status, self.message, self.reason = status, one_line(message), reason


class RequestSchema:
    """The request model of one app: ``texts`` (or ``pairs`` for a pair task) of 1 to ``max_items`` items."""

    def __init__(self, task: str, text_fields: Sequence[str], max_items: int):
        self.task, self.max_items = task, int(max_items)
        pair = len(text_fields) > 1
        self.field, self.other = ("pairs", "texts") if pair else ("texts", "pairs")
        self.want = (f'"pairs" (a list of [{", ".join(text_fields)}] pairs)' if pair else '"texts" (a list of strings)')
        item = Annotated[list[str], Field(min_length=len(text_fields), max_length=len(text_fields))] if pair else str
        self.model = create_model(
            "PairsRequest" if pair else "TextsRequest", __base__=_RequestBase,
            **{self.field: (list[item], Field(min_length=1, max_length=self.max_items,  # type: ignore[valid-type]
                                              description=f"1 to {self.max_items} "
                                              + ("pairs of texts." if pair else "texts.")))})

    def explain(self, errors: Sequence[dict], body: Any, check_items: Callable[[list], Any],
                check_policy: Callable[[str], Any]) -> Refusal:
        """The refusal for a request ``body`` that FastAPI found not to fit the model (its ``errors``);
        ``check_items`` and ``check_policy`` raise the :class:`SweetError` whose message a bad item or an unknown
        policy gets."""
        problems = {}
        for e in errors:
            loc = tuple(e["loc"][1:]) if e["loc"][:1] == ("body",) else tuple(e["loc"])
            problems.setdefault(_kind(loc, e, self.field), []).append((loc, e))
        first = min(problems, key=_ORDER.index)
        loc, e = problems[first][0]
        if first == "body":
            return Refusal(400, f"request body must be a JSON object with {self.want}, got {_type_name(body)}")
        if first == "extra":
            extra = [str(where[0]) for where, _ in problems[first]]
            unknown = [k for k in extra if k != self.other]
            if unknown:
                return Refusal(400, f"unknown field(s) in request body: {', '.join(unknown)}; expected {self.field}, "
                                    "threshold, policy")
            return Refusal(400, f"task {self.task} takes {self.want}, not \"{self.other}\"")
        if first == "missing":
            return Refusal(400, f"request body needs {self.want}")
        if first == "not_a_list":
            return Refusal(400, f'"{self.field}" must be a list, got {_type_name(e["input"])}')
        if first == "empty":
            return Refusal(400, f'"{self.field}" is empty: give at least one item')
        if first == "too_many":
            return Refusal(413, f'too many items: {len(e["input"])} in "{self.field}" (at most {self.max_items} per '
                                "request; split the request)", "too_large")
        if first == "threshold_type":
            return Refusal(400, f'"threshold" must be a number in [0, 1], got {_type_name(e["input"])}')
        if first == "policy_type":
            return Refusal(400, f'"policy" must be a string, got {_type_name(e["input"])}')
        try:
            if first == "threshold_range":
                check_threshold(e["input"])
            if first in ("policy_value", "item") and isinstance(body.get("policy"), str):
                check_policy(body["policy"])  # a known name this model cannot use comes before the items
            if first == "item":
                check_items(body[self.field])
        except SweetError as exc:
            return Refusal(400, str(exc))
        return Refusal(400, f"{'.'.join(map(str, loc))}: {e['msg']}")  # not reached for the errors above


_ORDER = ("body", "extra", "missing", "not_a_list", "empty", "too_many", "threshold_type", "policy_type",
          "threshold_range", "policy_value", "item", "other")
_RANGE = ("greater_than_equal", "less_than_equal", "finite_number")


def _kind(loc: tuple, error: dict, field: str) -> str:
    """Which of :data:`_ORDER`'s problems a pydantic error (at ``loc`` inside the body) is."""
    kind = error["type"]
    if not loc:
        return "body"
    if kind == "extra_forbidden":
        return "extra"
    if kind == "missing" and loc == (field,):
        return "missing"
    if loc[0] == field:
        if len(loc) > 1:
            return "item"
        return {"too_short": "empty", "too_long": "too_many"}.get(kind, "not_a_list")
    if loc[0] == "threshold":
        return "threshold_range" if kind in _RANGE else "threshold_type"
    if loc[0] == "policy":
        return "policy_value" if isinstance(error.get("input"), str) else "policy_type"
    return "other"


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)

