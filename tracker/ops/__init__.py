"""The operator's command, `tracker`: run the whole stack, migrate, API keys and messages, stats, doctor."""
