"""The stream plumbing both stream consumers (the flusher and the forwarder) use, and nothing program-specific.

    consumer.py   one consumer in one consumer group over several streams: own pending entries first,
                  then new ones; reclaim of idle entries; acknowledge; trim (never past what a group needs);
                  removal of dead consumers; groups found when a full Redis refuses to make them;
                  the raw-reply Redis client; `as_text`
    failures.py   which failures are operational, fatal or other (Redis, Postgres), and how one is told
                  in a line
    retry.py      `Outage`, logging a failure once per change of state; `Retry`, the one policy every
                  retry loop uses; the transient error tuples and the classification (re-exported)
    heartbeat.py  consumer names, `Progress` (work in hand and when it last moved), the heartbeat writer
                  that follows it, and `check_heartbeat` for `flusher --check` / `hooks --check`
    tasks.py      waits that end: `bounded` and `stop_tasks`, for shutdowns that never hang

It may import tracker.config, tracker.contract and third-party packages only.
"""
