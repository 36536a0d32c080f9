-- `dingtalk.rate_limit` is DingTalk's limit per app, so the daemons sharing this database share
-- it: before each StartCloudRecord or check, a daemon takes the next send slots of its app here.
-- `next_at` is the first slot nobody holds; slots are one period (1.03 s / rate_limit) apart, on
-- the server's clock, so no second of it holds more than rate_limit sends whichever daemon sends.
-- PostgreSQL only: SQLite has one daemon, which keeps its limit in memory.
CREATE TABLE send_slots (
    app      text PRIMARY KEY,
    next_at  timestamptz NOT NULL
);
