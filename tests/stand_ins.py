"""Stand-ins shared by the report tests."""

from __future__ import annotations


class StudyStandIn:
    """What the report reads of a Study: its fields as a dict and a digest (all zeros)."""

    def __init__(self, info: dict):
        self.info = info

    def model_dump(self) -> dict:
        return self.info

    def digest(self) -> str:
        return "0" * 64
