"""Op surface of the 'conv' kernel family (validation and dispatch)."""

__all__ = []
