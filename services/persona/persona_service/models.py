"""HTTP request/response bodies (they are also the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from . import store as st

DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
AttributeKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
AttributeValue = Annotated[str, StringConstraints(max_length=256)]
Attributes = Annotated[dict[AttributeKey, AttributeValue], Field(max_length=20, description="Up to 20 string entries")]
MaxSessions = Annotated[int, Field(ge=1, le=10, description="How many sessions may use the persona at once")]


class PersonaCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: DisplayName
    attributes: Attributes = Field(default_factory=dict)
    max_sessions: MaxSessions = 1


class PersonaPatch(BaseModel):
    """Only the fields sent change; max_sessions may not drop below the slots currently reserved."""

    model_config = ConfigDict(extra="forbid")

    display_name: DisplayName | None = None
    attributes: Attributes | None = None
    max_sessions: MaxSessions | None = None


class Persona(BaseModel):
    persona_id: str
    display_name: str
    attributes: dict[str, str]
    max_sessions: int
    reserved: int = Field(description="Session slots currently held or confirmed")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, p: st.Persona) -> Persona:
        return cls(
            persona_id=p.persona_id,
            display_name=p.display_name,
            attributes=p.attributes,
            max_sessions=p.max_sessions,
            reserved=p.reserved,
            created_at=datetime.fromisoformat(p.created_at),
            updated_at=datetime.fromisoformat(p.updated_at),
        )


class PersonaList(BaseModel):
    items: list[Persona] = Field(description="One page of the caller's personas, in persona_id order")
    next_page_token: str | None = Field(
        default=None, description="Pass as `page_token` for the next page; null on the last page (a page may hold fewer "
        "than `limit` personas, so only null means there are no more)"
    )
