"""illbridge: the Alma ⇄ WorldShare ILL bridge."""

# Tables must be declared after the constraint naming convention is set.
from app import db as _db  # noqa: F401
