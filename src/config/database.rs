//! `database`: the SQLite file or the PostgreSQL URL, and how it is opened.

#[allow(unused_imports)]
use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Full,
    Normal,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// SQLite file, created if missing (WAL mode). Unused with `url`.
    pub path: PathBuf,
    /// `postgres://user@host[:port]/dbname[?sslmode=…]`: PostgreSQL instead of the SQLite file, for
    /// several daemons on one database (`docs/database.md`). Empty: SQLite at `path`. Never holds
    /// the password (`password_file`).
    pub url: String,
    /// File holding the PostgreSQL password; else `$CREDENTIALS_DIRECTORY/database_password`; else
    /// `DINGREC_DATABASE__PASSWORD`; else none (peer or certificate authentication).
    pub password_file: PathBuf,
    #[serde(skip_serializing)]
    pub password: Option<SecretString>,
    /// PostgreSQL connections this process keeps at most (1 to 64).
    pub max_connections: u32,
    /// How long a writer waits for a lock held by another process (SQLite `busy_timeout`).
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// `full` (default): every committed attempt survives a power cut. `normal` is faster but
    /// may lose the last commits on power loss. See README "Design notes".
    pub synchronous: Synchronous,
}

/// Where the SQLite database is when the configuration names none.
pub const DEFAULT_DATABASE_PATH: &str = "/var/lib/dingrec/dingrec.db";

/// Bounds of `database.max_connections`.
pub const MAX_DATABASE_CONNECTIONS: u32 = 64;

/// Which engine a configuration selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseEngine {
    Sqlite,
    Postgres,
}

impl DatabaseEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseEngine::Sqlite => "sqlite",
            DatabaseEngine::Postgres => "postgres",
        }
    }
}

impl DatabaseSettings {
    pub fn engine(&self) -> DatabaseEngine {
        if self.url.is_empty() {
            DatabaseEngine::Sqlite
        } else {
            DatabaseEngine::Postgres
        }
    }

    /// Where the database is, for messages: the SQLite file, or the URL (which holds no password).
    pub fn location(&self) -> String {
        match self.engine() {
            DatabaseEngine::Sqlite => self.path.display().to_string(),
            DatabaseEngine::Postgres => self.url.clone(),
        }
    }

    /// `url`'s checks: a PostgreSQL URL without a password, and no `path` beside it.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 || self.max_connections > MAX_DATABASE_CONNECTIONS {
            return Err(ConfigError::Invalid(format!(
                "database.max_connections must be between 1 and {MAX_DATABASE_CONNECTIONS} (it is {})",
                self.max_connections
            )));
        }
        if self.url.is_empty() {
            return Ok(());
        }
        let bad = |why: &str| ConfigError::Invalid(format!("database.url: {why}"));
        if self.path != Path::new(DEFAULT_DATABASE_PATH) {
            return Err(bad(
                "database.url (PostgreSQL) and database.path (SQLite) exclude each other: keep one",
            ));
        }
        let parsed = reqwest::Url::parse(&self.url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(bad("must begin with postgres:// (SQLite is database.path)"));
        }
        if parsed.password().is_some()
            || parsed
                .query_pairs()
                .any(|(k, _)| k.eq_ignore_ascii_case("password"))
        {
            return Err(bad(
                "holds a password: the URL is logged and shown; put the password in database.password_file or $CREDENTIALS_DIRECTORY/database_password",
            ));
        }
        let options = self.postgres_options()?;
        let host = options.get_host();
        let local = options.get_socket().is_some()
            || host.starts_with('/')
            || host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        use sqlx::postgres::PgSslMode;
        if !local
            && !matches!(
                options.get_ssl_mode(),
                PgSslMode::VerifyFull | PgSslMode::VerifyCa
            )
        {
            return Err(bad(&format!(
                "the server {host} is not on this machine, and sslmode is {} (`prefer` when not given): \
                 add sslmode=verify-full (or verify-ca) to the URL, with sslrootcert=FILE when the \
                 server's certificate is signed by a CA of your own; anything less sends the password \
                 in clear or to whoever answers",
                ssl_mode_name(options.get_ssl_mode())
            )));
        }
        Ok(())
    }

    /// The PostgreSQL connection options: the URL's, with the password resolved apart, and
    /// bounds on what the server may hold: a statement runs at most a minute, a transaction left
    /// idle is ended after a minute, and the server probes an idle connection's peer (TCP
    /// keepalives) so a vanished daemon's connection and locks go within a minute or two.
    pub fn postgres_options(&self) -> Result<sqlx::postgres::PgConnectOptions, ConfigError> {
        let options: sqlx::postgres::PgConnectOptions = self
            .url
            .parse()
            .map_err(|e: sqlx::Error| ConfigError::Invalid(format!("database.url: {e}")))?;
        let options = options.options([
            ("statement_timeout", "60s"),
            ("idle_in_transaction_session_timeout", "60s"),
            ("tcp_keepalives_idle", "30"),
            ("tcp_keepalives_interval", "10"),
            ("tcp_keepalives_count", "3"),
        ]);
        Ok(match &self.password {
            Some(p) => options.password(p.expose_secret()),
            None => options,
        })
    }
}

pub(super) fn ssl_mode_name(mode: sqlx::postgres::PgSslMode) -> &'static str {
    use sqlx::postgres::PgSslMode;
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

impl PartialEq for DatabaseSettings {
    fn eq(&self, other: &Self) -> bool {
        same_secret(&self.password, &other.password)
            && serde_json::to_value(self).ok() == serde_json::to_value(other).ok()
    }
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("path", &self.path)
            .field("url", &self.url)
            .field("password_file", &self.password_file)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("max_connections", &self.max_connections)
            .field("busy_timeout", &self.busy_timeout)
            .field("synchronous", &self.synchronous)
            .finish()
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            path: PathBuf::from(DEFAULT_DATABASE_PATH),
            url: String::new(),
            password_file: PathBuf::new(),
            password: None,
            max_connections: 5,
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Full,
        }
    }
}
