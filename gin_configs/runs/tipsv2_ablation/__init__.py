"""Gin files; a package for the reason gin_configs/__init__.py gives."""
