-- Indexes for the questions asked often of a large audit log (docs/database.md):
-- /readyz's "last success" reads one index entry instead of every attempt;
CREATE INDEX attempts_succeeded ON attempts (finished_at) WHERE outcome = 'success';
-- `dingrec history --policy NAME` and an apply's "cancel this policy's rows" search by policy.
CREATE INDEX occurrences_by_policy_name ON occurrences (policy_name, due_at);
CREATE INDEX occurrences_by_policy ON occurrences (policy_id, state, due_at);
