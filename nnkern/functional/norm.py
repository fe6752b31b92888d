"""Op surface of the 'norm' kernel family (validation and dispatch)."""

__all__ = []
