"""The project's version, written into every manifest (one place: pyproject.toml reads it)."""

__version__ = "0.1.0"
