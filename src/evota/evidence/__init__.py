"""Rollout evidence: what happened after firmware shipped (issue 13). Pure modules compute,
shell modules read the database."""
