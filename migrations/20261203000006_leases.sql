-- Leases: an attempt or check without an outcome is held by the process that claimed it
-- (`instance`, `hostname:pid`) until `lease_until`, which that process moves forward while the call
-- is in flight (`scheduler.lease`, default 30 s). A lease that ran out belongs to a process that
-- died: its attempt is closed as `interrupted` and the occurrence carries on (`docs/database.md`).
-- NULL for rows written before this column existed; it means nothing once the row has its outcome.
ALTER TABLE attempts ADD COLUMN lease_until TEXT;
ALTER TABLE checks ADD COLUMN instance TEXT;
ALTER TABLE checks ADD COLUMN lease_until TEXT;
