//! The one error type of the store, and the mapping from driver errors onto it.

/// Everything that can go wrong in the store.
///
/// Callers branch on [`Conflict`](StoreError::Conflict),
/// [`ActiveRolloutExists`](StoreError::ActiveRolloutExists),
/// [`Fenced`](StoreError::Fenced) and [`NotFound`](StoreError::NotFound); the other
/// variants are reported to the operator as they are.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL could not be understood. The URL in the message has its password
    /// removed.
    #[error("invalid store URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL, password removed.
        url: String,
        /// What is wrong with it and what is expected.
        reason: String,
    },

    /// The database cannot be reached or cannot take the write now: connection refused
    /// or lost, no free connection in time, disk full, file or transaction read-only,
    /// I/O error, database locked for too long. Nothing was written; retrying later may
    /// succeed.
    #[error(
        "store unavailable while {operation}: {source} \
         (check that the database is reachable, its disk has free space and it is writable)"
    )]
    Unavailable {
        /// What the store was doing, e.g. "updating rollout ro-…".
        operation: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// Any other database error. It indicates a bug or a database changed behind
    /// fledge's back; nothing was written.
    #[error("database error while {operation}: {source}")]
    Database {
        /// What the store was doing.
        operation: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// A schema migration failed; the database is left at the previous version.
    #[error("schema migration {version} ({name}) failed: {source}")]
    Migration {
        /// The migration's version number.
        version: i64,
        /// The migration's name.
        name: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// The database was migrated by a newer fledge. Run that version, or restore a
    /// backup taken before the upgrade.
    #[error(
        "the database schema is at version {found} but this fledge knows versions up to \
         {supported}: it was written by a newer fledge"
    )]
    SchemaTooNew {
        /// The newest version recorded in the database.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },

    /// The rollout (or rollout group) does not exist.
    #[error("{} `{id}` not found", record_kind(id))]
    NotFound {
        /// The rollout or group id that was asked for.
        id: String,
    },

    /// Optimistic concurrency: the rollout (or rollout group) was changed by someone
    /// else since the caller read it. Re-read it and decide again.
    #[error(
        "{} `{id}` was changed concurrently: expected revision {expected}, \
         found {actual}; re-read it and retry",
        record_kind(id)
    )]
    Conflict {
        /// The rollout or group id.
        id: String,
        /// The revision the caller based its change on.
        expected: i64,
        /// The revision in the store.
        actual: i64,
    },

    /// The app already has an active rollout (phase `Pending`, `Progressing` or
    /// `Paused`); finish, abort or wait for it first.
    #[error("app `{app}` already has an active rollout `{id}`")]
    ActiveRolloutExists {
        /// The app.
        app: String,
        /// The id of its active rollout.
        id: String,
    },

    /// The write carried a fencing token from a lease that has since passed to a newer
    /// holder (or was released): the writer is no longer the leader and must stop.
    #[error(
        "write fenced: lease `{lease}` epoch {epoch} is stale (current epoch: {})",
        current.map_or_else(|| "none, lease not held".to_owned(), |e| e.to_string())
    )]
    Fenced {
        /// The lease name.
        lease: String,
        /// The epoch the writer holds.
        epoch: i64,
        /// The lease's current epoch, `None` if the lease does not exist or was released.
        current: Option<i64>,
    },

    /// A value handed to the store is not acceptable (empty name, unknown phase, zero
    /// lease duration).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The argument or field at fault.
        field: &'static str,
        /// What was expected and what was found.
        reason: String,
    },

    /// A stored value cannot be read back (JSON that no longer parses). The row was
    /// written by something other than fledge, or the file is damaged.
    #[error("stored {what} is unreadable: {reason}")]
    Corrupt {
        /// Which value, e.g. "state of rollout ro-…".
        what: String,
        /// The parse error.
        reason: String,
    },
}

/// Shorthand for results of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

// === impl StoreError ===

impl StoreError {
    /// Whether the error is transient (the database is unreachable, full or read-only)
    /// rather than a refusal of this particular write.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// Classifies a driver error raised while doing `operation`.
    pub(crate) fn from_sqlx(operation: impl Into<String>, source: sqlx::Error) -> Self {
        let operation = operation.into();
        if is_unavailable(&source) {
            StoreError::Unavailable { operation, source }
        } else {
            StoreError::Database { operation, source }
        }
    }
}

/// What an id names, for messages: group ids start with `gr-`, rollout ids with
/// `ro-`.
fn record_kind(id: &str) -> &'static str {
    if id.starts_with("gr-") {
        "rollout group"
    } else {
        "rollout"
    }
}

/// Whether a driver error means "the database cannot serve us now" (as opposed to "this
/// statement is wrong").
fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else { return false };
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLite: the primary result code is the low byte of the extended one.
                // BUSY, LOCKED, NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN,
                // PROTOCOL, NOTADB.
                let n = code.parse::<i64>().unwrap_or(0);
                matches!(n & 0xff, 5 | 6 | 7 | 8 | 10 | 11 | 13 | 14 | 15 | 26)
            } else {
                // PostgreSQL SQLSTATE classes: 08 connection exception, 53 insufficient
                // resources (disk full, out of memory, too many connections), 57
                // operator intervention (shutdown), 58 system error (I/O); and 25006
                // read-only transaction (a hot standby), 40001/40P01 serialization
                // failure and deadlock (retryable).
                let class = code.get(..2).unwrap_or("");
                matches!(class, "08" | "53" | "57" | "58")
                    || matches!(&*code, "25006" | "40001" | "40P01")
            }
        }
        _ => false,
    }
}

/// Whether a driver error is a unique-constraint violation.
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// Whether a driver error is a foreign key violation (a reference to a row that does
/// not exist).
pub(crate) fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation)
}

/// Removes the password from a database URL, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                url.to_owned()
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://fledge:s3cret@db:5432/fledge?sslmode=require"),
            "postgres://fledge:***@db:5432/fledge?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://fledge@db/fledge"),
            "postgres://fledge@db/fledge"
        );
        assert_eq!(redact_url("sqlite://fledge.db"), "sqlite://fledge.db");
        assert_eq!(redact_url("fledge.db"), "fledge.db");
    }

    #[test]
    fn fenced_message_names_the_epochs() {
        let e = StoreError::Fenced {
            lease: "controller".into(),
            epoch: 3,
            current: Some(4),
        };
        assert_eq!(
            e.to_string(),
            "write fenced: lease `controller` epoch 3 is stale (current epoch: 4)"
        );
    }
}
