"""Infrastructure helpers: atomic checkpoint I/O, logging helpers."""
