-- The access token, sealed (AES-256-GCM under a key derived from the app secret, `docs/database.md`):
-- a daemon that restarts, or another daemon on the same database, uses the token already fetched
-- instead of fetching (and paying for) its own. One row per app; the token itself is never here.
CREATE TABLE access_tokens (
    app         TEXT PRIMARY KEY,
    sealed      BLOB NOT NULL,
    -- When DingTalk said the token expires, and when dingrec fetches the next one (the refresh
    -- margin before): RFC 3339 UTC like every other time.
    expires_at  TEXT NOT NULL,
    refresh_at  TEXT NOT NULL,
    -- Which dingrec process fetched it (`hostname:pid`), and when.
    fetched_by  TEXT NOT NULL,
    fetched_at  TEXT NOT NULL
);
