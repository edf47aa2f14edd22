"""project layer (see ARCHITECTURE.md)."""
