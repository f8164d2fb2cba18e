"""Classroom exercises whose answer key is the library."""
