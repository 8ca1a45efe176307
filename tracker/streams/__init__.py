"""The stream plumbing both stream consumers (the flusher and the forwarder) use, and nothing program-specific.

    consumer.py   one consumer in one consumer group over several streams: own pending entries first,
                  then new ones; reclaim of idle entries; acknowledge; trim (never past what a group needs);
                  the raw-reply Redis client; `as_text`
    retry.py      which failures pass (Redis, Postgres), and `Retry`, the one policy every retry loop uses
    heartbeat.py  consumer names, the heartbeat writer, and `check_heartbeat` for `flusher --check` / `hooks --check`

It may import tracker.config, tracker.contract and third-party packages only.
"""
