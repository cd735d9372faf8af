"""One API client error type: the CLI prints it as one line, the console shows its parts."""

from __future__ import annotations

from evota.client import ApiError


def test_a_problem_answer_is_one_line_and_its_parts() -> None:
    exc = ApiError.of_problem(422, {"title": "Invalid field", "detail": "too long", "field": "q"})
    assert str(exc) == "HTTP 422: Invalid field: too long"
    assert (exc.status, exc.title, exc.detail, exc.field) == (422, "Invalid field", "too long", "q")


def test_an_answer_without_a_problem_body_still_names_the_status() -> None:
    exc = ApiError.of_problem(502, ["not", "a", "problem"], "Bad Gateway")
    assert str(exc) == "HTTP 502: Bad Gateway"
    assert (exc.status, exc.title, exc.detail, exc.field) == (502, "Bad Gateway", "", None)
    assert str(ApiError.of_problem(500, {})) == "HTTP 500: Error"


def test_no_answer_at_all_has_no_status() -> None:
    exc = ApiError("cannot reach evota at http://127.0.0.1:1: refused")
    assert exc.status is None and str(exc).startswith("cannot reach evota")
