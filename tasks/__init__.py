"""Data tasks: procedurally generated datasets and their vocabularies."""
