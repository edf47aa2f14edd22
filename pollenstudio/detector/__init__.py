"""detector layer (see ARCHITECTURE.md)."""
