"""The contract between the programs: what one writes and another reads, defined once.

Event Structs and the hot-path tuple layout (`events`), every Redis key and stream
name (`keys`), tokens and channel names (`tokens`), the spool file format
(`spool_format`), process snapshots (`snapshots`), exit codes (`exits`), which URLs
may be redirected to (`urls`), and the Postgres schema (`schema`, `migrations/`).
Nothing here imports any other part of the project.
"""
