//! How a command ends: its exit code and, on failure, what to print. Exit codes (see
//! `docs/operations.md`): 0 ok, 1 failure, 2 usage or invalid input, 3 `plan` found changes, 65
//! (`EX_DATAERR`) when the database's schema is not this binary's (a newer dingrec migrated it,
//! or it waits for `dingrec migrate`), 78 (`EX_CONFIG`) when `run` cannot start because its config
//! is invalid. The unit's `RestartPreventExitStatus=` lists 65 and 78: a restart cannot fix either.

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_INVALID: i32 = 2;
pub const EXIT_CHANGES: i32 = 3;
pub const EXIT_SCHEMA: i32 = 65;
pub const EXIT_CONFIG: i32 = 78;
/// Stopped by Ctrl-C (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: i32 = 130;

/// A command's failure: what to print and how to exit.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        let code = match e {
            crate::store::StoreError::Schema(_) => EXIT_SCHEMA,
            _ => EXIT_FAILURE,
        };
        Failure::new(code, e.to_string())
    }
}

/// A command's result: the exit code of a command that did its job, or why it could not.
pub type CmdResult = Result<i32, Failure>;

/// Print a failure's message (if any) to stderr; the exit code.
pub fn report(result: CmdResult) -> i32 {
    match result {
        Ok(code) => code,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("dingrec: {}", f.message);
            }
            f.code
        }
    }
}
