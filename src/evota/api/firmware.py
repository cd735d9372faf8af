"""The firmware repository: upload, list, show, lifecycle, vendor policy, trusted roots."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1/firmware", tags=["firmware"])
