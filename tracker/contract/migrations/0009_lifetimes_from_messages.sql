-- A list's lifetimes are read from the per-message rollup of the list's own messages
-- (message_profile_stats; tracker/domain/analytics/cohorts.py), and "active since" from the
-- active days and the profile's timeline index: nothing reads the per-profile activity row any
-- more, and keeping it cost the flusher an upsert per profile in every batch.
drop table profile_activity;
