"""Protocol objects <-> engine calls, one module per endpoint family (no FastAPI here)."""
