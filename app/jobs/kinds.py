"""Job kinds: a stored name and the type of the payload its jobs carry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

P = TypeVar("P", bound="Payload")


class Payload(BaseModel):
    """A job's arguments, stored as JSON; a kind without arguments uses this empty one."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class JobKind(Generic[P]):
    name: str
    payload: type[P]
