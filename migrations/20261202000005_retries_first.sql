-- Under a rate limit, a retry that is due is claimed before first attempts still waiting (a burst's
-- queue of first attempts must not hold a retry back for its whole length): its own index.
CREATE INDEX occurrences_retry_due ON occurrences (next_attempt_at) WHERE state = 'retry_wait';
