"""What the edge and the flusher share: settings, tokens, event Structs, key names, schema."""
