"""Transport fixtures live in tests/conftest.py (the server tests use them too)."""
