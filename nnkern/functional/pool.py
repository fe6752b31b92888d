"""Op surface of the 'pool' kernel family (validation and dispatch)."""

__all__ = []
