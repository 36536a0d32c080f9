-- The status page's reads (docs/operations.md "The status page"): an occurrence's alerts, the
-- alerts that gave up, and the start checks that could not confirm a recording. Indexes only; each
-- can be created again should dingrec stop before sqlx records the migration.
CREATE INDEX IF NOT EXISTS alerts_by_occurrence ON alerts (occurrence_id) WHERE occurrence_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS alerts_failed ON alerts (created_at) WHERE state = 'failed';
CREATE INDEX IF NOT EXISTS checks_unconfirmed ON checks (at) WHERE outcome = 'error';
