//! The store layer: the connection pool, the migrations, and the SQL of each table with its rows as
//! types. SQLite (embedded, the default) or PostgreSQL, through `sqlx::Any` with SQL that both
//! accept (`$n` parameters, `BIGINT` Unix seconds, `TEXT`, partial unique indexes); the refresh
//! rotation, the hot path, is each backend's own (`group_commit`). Migrations in
//! `issuer/migrations/` are applied at open.
//!
//! The store knows nothing of the domain: it reads and writes rows, and the domain layer
//! (`crate::domain`) decides what they mean.

pub(crate) mod accounts;
mod group_commit;
pub(crate) mod keys;
pub(crate) mod sessions;
pub(crate) mod signin;

use group_commit::GroupCommit;
use sessions::{RotatedRow, Rotation};
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Transaction};
use std::path::Path;
use std::time::Duration;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The schemes the issuer accepts, as the configuration error names them.
    pub(crate) const SCHEMES: &'static str = "sqlite:, postgres: or postgresql:";

    /// The backend `url` names, by its scheme; `None` for any other database.
    pub(crate) fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// Whether [`Db::open`] may create what is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the SQLite file and its folder if needed, switch it to WAL mode and apply pending
    /// migrations: for `serve` and the commands that may set up a new issuer.
    Create,
    /// Open a database that exists, as it is: no file, folder or table is created (SQLite is
    /// opened with `mode=rw`), nothing is migrated. For commands that only read or change keys.
    Existing,
}

/// A connection pool with the schema in place. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    /// The writer that commits refresh rotations in groups.
    group_commit: GroupCommit,
}

/// A storage failure. The message may name tables, columns and the redacted database URL (see
/// [`redact_url`]), never a value or a credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The database reported an error, or could not be reached.
    #[error("database: {0}")]
    Sqlx(sqlx::Error),
    /// An insert met a unique constraint: the row exists already.
    #[error("the row exists already")]
    Duplicate,
    /// Applying migrations failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The folder of the SQLite file could not be created.
    #[error("cannot create the database folder {path}: {source}")]
    Folder {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The URL names neither SQLite nor PostgreSQL.
    #[error("the database URL must start with {}", Backend::SCHEMES)]
    UnsupportedUrl,
    /// [`OpenMode::Existing`] and there is no SQLite file at the URL's path.
    #[error("there is no database at {database}; is data_dir (or database_url) right? `issuer serve` creates it")]
    Missing {
        /// The database, redacted.
        database: String,
    },
    /// The writer that commits SQLite's refresh rotations has stopped.
    #[error("the database writer has stopped")]
    WriterGone,
    /// SQLite's writer of refresh rotations failed to start, or the transaction that held this
    /// write (with others) failed.
    #[error("database writer: {0}")]
    Writer(String),
    /// The database did not answer in time.
    #[error("the database did not answer within {0:?}")]
    TimedOut(Duration),
    /// A stored value is not what the schema promises (a row written by something else).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What is wrong.
        detail: String,
    },
}

impl From<sqlx::Error> for DbError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(database) if database.is_unique_violation() => Self::Duplicate,
            _ => Self::Sqlx(error),
        }
    }
}

/// The most connections a pool holds.
pub const MAX_CONNECTIONS: u32 = 8;

/// What the store's functions return.
pub(crate) type DbResult<T> = Result<T, DbError>;

impl Db {
    /// Connects to `url`. With [`OpenMode::Create`], creates a SQLite file (and its folder) if
    /// needed, switches SQLite to WAL mode, and applies pending migrations; with
    /// [`OpenMode::Existing`], opens what is there and changes nothing.
    pub async fn open(url: &str, mode: OpenMode) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url).ok_or(DbError::UnsupportedUrl)?;
        // Each acquire emits a debug event with its wait, which the metrics read.
        let options = AnyPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .acquire_time_level(tracing::log::LevelFilter::Debug);
        if mode == OpenMode::Existing {
            return match backend {
                Backend::Sqlite => {
                    let path = sqlite_path(url);
                    if !path.is_empty() && path != ":memory:" && !Path::new(path).exists() {
                        return Err(DbError::Missing { database: redact_url(url) });
                    }
                    let pool = options.connect(&sqlite_url_without_create(url)).await?;
                    Ok(Self { pool, group_commit: GroupCommit::sqlite(Path::new(path))? })
                }
                Backend::Postgres => {
                    Ok(Self { pool: options.connect(url).await?, group_commit: GroupCommit::postgres(url) })
                }
            };
        }
        if backend == Backend::Sqlite {
            create_sqlite_folder(url)?;
        }
        let pool = options.connect(url).await?;
        let mut attempts = 1;
        loop {
            match prepare(&pool, backend).await {
                Ok(()) => break,
                // Processes starting together on a new SQLite file race to switch it to WAL and
                // to migrate it (SQLite migrations take no lock); the losers find it done later.
                Err(error) if backend == Backend::Sqlite && attempts < 20 => {
                    tracing::debug!(%error, attempts, "database set-up raced another process; retrying");
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => return Err(error),
            }
        }
        let group_commit = match backend {
            Backend::Sqlite => GroupCommit::sqlite(Path::new(sqlite_path(url)))?,
            Backend::Postgres => GroupCommit::postgres(url),
        };
        Ok(Self { pool, group_commit })
    }

    /// Runs a refresh rotation through the writer that commits those of concurrent requests
    /// together (see `group_commit`). `None` when the presented token was not spent; the outcome
    /// is durable before it is returned.
    pub(crate) async fn rotate_refresh(&self, rotation: Rotation) -> DbResult<Option<RotatedRow>> {
        self.group_commit.rotate(rotation).await
    }

    /// The pool, for the store's functions.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction: the store's functions take it as their connection.
    pub(crate) async fn begin(&self) -> DbResult<Transaction<'static, Any>> {
        Ok(self.pool.begin().await?)
    }

    /// A connection from the pool, for several reads in a row.
    pub(crate) async fn acquire(&self) -> DbResult<sqlx::pool::PoolConnection<Any>> {
        Ok(self.pool.acquire().await?)
    }

    /// The pool's connections: (open, idle).
    pub fn connections(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    /// True when a trivial query succeeds.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// WAL mode for SQLite (persistent in the file: readers never wait for the writer), then the
/// pending migrations.
async fn prepare(pool: &AnyPool, backend: Backend) -> Result<(), DbError> {
    if backend == Backend::Sqlite {
        sqlx::query("PRAGMA journal_mode = WAL").execute(pool).await?;
    }
    sqlx::migrate!("./migrations").run(pool).await?;
    Ok(())
}

/// The file of a `sqlite:` URL as sqlx reads it: what stands between `sqlite://` (or `sqlite:`)
/// and the query.
fn sqlite_path(url: &str) -> &str {
    let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
    path.split('?').next().unwrap_or_default()
}

/// The `sqlite:` URL with its `mode` parameters replaced by `mode=rw`: open, never create.
fn sqlite_url_without_create(url: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params = url::form_urlencoded::Serializer::new(String::new());
    params.extend_pairs(url::form_urlencoded::parse(query.as_bytes()).filter(|(name, _)| name != "mode"));
    params.append_pair("mode", "rw");
    format!("{base}?{}", params.finish())
}

/// `sqlite://dir/file.db?mode=rwc` creates the file but not `dir`.
fn create_sqlite_folder(url: &str) -> Result<(), DbError> {
    let path = sqlite_path(url);
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    match Path::new(path).parent() {
        Some(folder) if !folder.as_os_str().is_empty() => std::fs::create_dir_all(folder)
            .map_err(|source| DbError::Folder { path: folder.display().to_string(), source }),
        _ => Ok(()),
    }
}

/// A database URL as logs and errors may show it: the scheme, the host and port, and the
/// database name (or the SQLite file), never a user name, a password or the query (where sqlx
/// also takes `password=`, `sslkey=`, ...).
pub fn redact_url(url: &str) -> String {
    match Backend::from_url(url) {
        Some(Backend::Sqlite) => format!("sqlite://{}", sqlite_path(url)),
        Some(Backend::Postgres) => match url::Url::parse(url) {
            Ok(parsed) => {
                let host = parsed.host_str().unwrap_or_default();
                let port = parsed.port().map(|port| format!(":{port}")).unwrap_or_default();
                format!("{}://{host}{port}{}", parsed.scheme(), parsed.path())
            }
            Err(_) => format!("{}://<unparsable>", url.split(':').next().unwrap_or_default()),
        },
        None => "<unsupported database URL>".to_owned(),
    }
}

/// Unix seconds as the database stores them (`BIGINT`).
pub(crate) fn to_db_time(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// Unix seconds read back; a negative value (never written here) reads as the epoch.
pub(crate) fn from_db_time(secs: i64) -> u64 {
    u64::try_from(secs).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_only_scheme_host_and_database() {
        let cases = [
            ("postgres://u:hunter2@db:5432/issuer?password=hunter2&sslmode=require", "postgres://db:5432/issuer"),
            ("postgresql://db.internal/issuer?password=hunter2", "postgresql://db.internal/issuer"),
            ("postgres://u@db/issuer", "postgres://db/issuer"),
            ("postgres:///issuer?host=/run/postgresql&password=hunter2", "postgres:///issuer"),
            ("postgres://u:hunter2@[bad", "postgres://<unparsable>"),
            ("sqlite://data/issuer.db?mode=rwc&password=hunter2", "sqlite://data/issuer.db"),
            ("sqlite:///var/lib/issuer.db", "sqlite:///var/lib/issuer.db"),
            ("mysql://u:hunter2@db/x", "<unsupported database URL>"),
        ];
        for (url, expected) in cases {
            let shown = redact_url(url);
            assert_eq!(shown, expected, "{url}");
            assert!(!shown.contains("hunter2") && !shown.contains("u@"), "{shown}");
        }
    }

    #[test]
    fn existing_sqlite_urls_never_create() {
        assert_eq!(sqlite_url_without_create("sqlite://data/issuer.db?mode=rwc"), "sqlite://data/issuer.db?mode=rw");
        assert_eq!(
            sqlite_url_without_create("sqlite://x.db?cache=shared&mode=rwc&mode=rwc"),
            "sqlite://x.db?cache=shared&mode=rw"
        );
        assert_eq!(sqlite_url_without_create("sqlite:x.db"), "sqlite:x.db?mode=rw");
    }

    #[tokio::test]
    async fn existing_mode_creates_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/missing/issuer.db?mode=rwc", dir.path().display());
        let error = Db::open(&url, OpenMode::Existing).await.expect_err("refused");
        assert!(matches!(error, DbError::Missing { .. }), "{error:?}");
        assert!(error.to_string().contains("missing/issuer.db"), "{error}");
        assert!(!dir.path().join("missing").exists(), "no folder was created");
    }
}
