"""The flusher: reads events from the Redis streams and stores them in Postgres.

Parts, in the order data flows through them:
`streams` (consumer group: read, reclaim, acknowledge, dead-letter, trim),
`batch` (decode and sort out bad entries), `sink` (COPY, dedupe, effects in one
transaction), `effects` (the set-based SQL of profile effects and counters),
`partitions` (daily events partitions), `committed` (the copy for action hooks),
`groupless` (room for the group when Redis is full), `metrics`, `worker` (the
loops, retries and shutdown), `cli`.
"""
