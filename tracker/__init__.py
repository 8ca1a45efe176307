"""What the three programs (edge, flusher, forwarder) and the operator's CLI share.

    contract/  what every program agrees on: events, Redis names, tokens, spool format, snapshots, schema
    config/    settings: the shared ones and one part per program, read from the environment
    streams/   the consumer-group reader, the retry policy and the heartbeat of the stream consumers
    domain/    business rules the API, the CLI and the forwarder share (messages, rendering, hooks, ...)
    ops/       the `tracker` command: run the stack, migrations, API keys, stats, doctor

Each layer imports only the ones listed below it (checked by `lint-imports`; see ARCHITECTURE.md).
"""
