"""The HTTP edge: pixels and redirects answered from memory, events batched onto Redis streams."""
