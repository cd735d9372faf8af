"""User errors carry a kind, not an HTTP status: the API edge maps every kind."""

from __future__ import annotations

from evota.api.auth import STATUS, problem
from evota.operators.users import UserError, UserErrorKind


def test_every_kind_has_a_status_at_the_api_edge() -> None:
    assert set(STATUS) == set(UserErrorKind)
    assert STATUS == {
        UserErrorKind.NOT_FOUND: 404,
        UserErrorKind.INVALID: 422,
        UserErrorKind.CONFLICT: 409,
    }


def test_the_problem_names_the_field() -> None:
    exc = UserError(UserErrorKind.INVALID, "Invalid roles", "give at least one role", "roles")
    answer = problem(exc)
    assert (answer.status, answer.title, answer.detail, answer.field) == (
        422,
        "Invalid roles",
        "give at least one role",
        "roles",
    )
    assert not hasattr(exc, "status")
