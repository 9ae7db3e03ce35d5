//! Group commit for refresh rotations: one writer owns one connection and commits the rotations
//! of concurrent requests together, so that many refreshes share one commit (one fsync, one round
//! trip) instead of queueing for locks one transaction each.
//!
//! - SQLite: a thread runs each rotation's two statements synchronously through rusqlite (on
//!   the libsqlite3 that sqlx links too), all in one transaction. Through sqlx each statement is a
//!   hand-off to the connection's worker thread and back, and a single writer doing that was the
//!   bottleneck (measured: 4.5k refreshes/s with the machine half idle). A checkpointer thread
//!   copies the WAL back into the database beside it, mostly off the writer's path.
//! - PostgreSQL: a few tasks take turns at the queue; each sends its batch as one statement over
//!   arrays (`unnest`), in one round trip and one implicit transaction. A token presented twice
//!   in one batch goes to the next statement of the same transaction; across batches (and
//!   processes) the row lock decides: of concurrent uses exactly one wins.
//!
//! Durability is unchanged: a rotation's answer is sent only after the transaction that holds it
//! has committed (SQLite's `synchronous` stays FULL, PostgreSQL's `synchronous_commit` on). A
//! rotation whose request has gone away before the writer reaches it is not run.

use super::sessions::{INSERT_TOKEN, ROTATE_MANY, RotatedRow, Rotation, SPEND};
use super::{DbError, DbResult, to_db_time};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};
use sqlx::{Connection as _, PgConnection};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The most rotations one transaction commits.
const MAX_BATCH: usize = 256;

/// The most rotations waiting for the writer; a request beyond that waits for room.
const QUEUE: usize = 1024;

/// How many batches may be committing at once on PostgreSQL (each on its own connection). A
/// single writer waits for each commit's flush before it sends the next batch, and a flush slowed
/// by other I/O on the server then sets the pace (measured: 2.4k–8.5k refreshes/s from run to run
/// with one writer).
const POSTGRES_WRITERS: usize = 4;

/// The SQLite writer's page cache, in KiB.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

/// The WAL size (in 4 KiB pages) past which the writer copies the rest of it back itself, right
/// after a pass of the checkpointer, so that SQLite can write the WAL from its beginning again.
const WAL_RESTART_PAGES: i64 = 32_768;

/// What the WAL file is cut back to, in bytes, when it restarts.
const WAL_SIZE_LIMIT: i64 = 256 * 1024 * 1024;

/// How often the checkpointer copies SQLite's WAL back into the database.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(50);

/// How long the writer waits for the write lock that another connection holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A rotation waiting for the writer, with where its outcome goes.
#[derive(Debug)]
struct Job {
    rotation: Rotation,
    outcome: oneshot::Sender<DbResult<Option<RotatedRow>>>,
}

/// The writer's queue. Cheap to clone; the writer ends when the last clone is dropped.
#[derive(Clone, Debug)]
pub(crate) struct GroupCommit {
    jobs: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Starts the SQLite writer on its own connection to the file at `path` (which exists: the
    /// pool has created and migrated it).
    pub(crate) fn sqlite(path: &Path) -> DbResult<Self> {
        let mut connection =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(writer_error)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(writer_error)?;
        // Every commit is on disk before its rotations are answered (WAL mode, fsync per commit).
        connection.pragma_update(None, "synchronous", "FULL").map_err(writer_error)?;
        // The tokens' indexes are written at random places (hashes): keep their pages in memory
        // rather than read them back from the file (SQLite's default cache is 2 MiB).
        connection.pragma_update(None, "cache_size", -WRITER_CACHE_KIB).map_err(writer_error)?;
        // A checkpointer copies the WAL back into the database beside the writer (measured: 6.4k
        // refreshes/s with the writer doing all of it at SQLite's default, every 1,000 pages;
        // 8.3k without). SQLite writes the WAL from its beginning again only when it has been
        // wholly copied as a write transaction starts, which under steady load happens only if
        // the writer itself copies the rest after a commit (without that the WAL grew to 2.5 GB
        // in a 20 s run). The writer does that only when the WAL is large, and right after the
        // checkpointer's passes, when little is left to copy: a commit that also copied what
        // 4,096 pages left took 10–20 ms, eight times a second, and set the refreshes' p99 (21 ms).
        connection.pragma_update(None, "wal_autocheckpoint", 0).map_err(writer_error)?;
        connection.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT).map_err(writer_error)?;
        let checkpointer =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(writer_error)?;
        let restart = Arc::new(AtomicBool::new(false));
        let (writer_alive, writer_gone) = std::sync::mpsc::channel::<()>();
        let restart_wanted = Arc::clone(&restart);
        std::thread::Builder::new()
            .name("sqlite-checkpointer".to_owned())
            .spawn(move || checkpoint(&checkpointer, &restart_wanted, &writer_gone))
            .map_err(writer_error)?;
        let (jobs, mut queue) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || {
                // Dropped when the writer ends, which ends the checkpointer.
                let _alive = writer_alive;
                let mut batch = Vec::with_capacity(MAX_BATCH);
                while let Some(job) = queue.blocking_recv() {
                    batch.push(job);
                    take_queued(&mut queue, &mut batch);
                    let outcomes = commit_sqlite(&mut connection, &batch);
                    answer(&mut batch, outcomes);
                    if restart.swap(false, Ordering::Relaxed) {
                        checkpoint_once(&connection);
                    }
                }
            })
            .map_err(writer_error)?;
        Ok(Self { jobs })
    }

    /// Starts the PostgreSQL writers, [`POSTGRES_WRITERS`] tasks that take turns at the queue,
    /// each with its own connection (made on its first batch, and again after a batch failed): while
    /// one waits for its commit to reach the disk, the next collects and sends its own batch.
    pub(crate) fn postgres(url: &str) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        for _ in 0..POSTGRES_WRITERS {
            let (queue, url) = (Arc::clone(&queue), url.to_owned());
            tokio::spawn(async move {
                let mut connection = None;
                let mut batch = Vec::with_capacity(MAX_BATCH);
                loop {
                    {
                        let mut queue = queue.lock().await;
                        let Some(job) = queue.recv().await else { return };
                        batch.push(job);
                        take_queued(&mut queue, &mut batch);
                    }
                    let outcomes = commit_postgres(&mut connection, &url, &batch).await;
                    answer(&mut batch, outcomes);
                }
            });
        }
        Self { jobs }
    }

    /// Runs `rotation` in the next commit of the writer; its outcome once committed.
    pub(crate) async fn rotate(&self, rotation: Rotation) -> DbResult<Option<RotatedRow>> {
        let (outcome, answer) = oneshot::channel();
        self.jobs.send(Job { rotation, outcome }).await.map_err(|_| DbError::WriterGone)?;
        answer.await.map_err(|_| DbError::WriterGone)?
    }
}

/// Copies the WAL back into the database every [`CHECKPOINT_INTERVAL`] until the writer ends
/// (`writer_gone` disconnects). When the WAL has grown past [`WAL_RESTART_PAGES`], a second pass
/// at once copies what was committed during the first, and the writer is asked (`restart`) to
/// copy the little that is left (measured: the writer's part took 4 ms at the median after two
/// passes, 10–12 ms after one).
fn checkpoint(connection: &Connection, restart: &AtomicBool, writer_gone: &std::sync::mpsc::Receiver<()>) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = writer_gone.recv_timeout(CHECKPOINT_INTERVAL) {
        if checkpoint_once(connection).is_some_and(|wal_pages| wal_pages > WAL_RESTART_PAGES)
            && checkpoint_once(connection).is_some()
        {
            restart.store(true, Ordering::Relaxed);
        }
    }
}

/// One passive checkpoint (it never waits for the writer or readers): the WAL's size in pages,
/// or `None` when it failed (logged; the next one retries).
fn checkpoint_once(connection: &Connection) -> Option<i64> {
    match connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1)) {
        Ok(wal_pages) => Some(wal_pages),
        Err(error) => {
            tracing::warn!(%error, "SQLite checkpoint failed; the next one retries");
            None
        }
    }
}

/// A failure to start the SQLite writer.
fn writer_error(error: impl std::fmt::Display) -> DbError {
    DbError::Writer(error.to_string())
}

/// Adds what else is queued to `batch` (up to [`MAX_BATCH`]), without waiting, and drops the
/// rotations whose request went away (its client, or its timeout): none is run that nobody can
/// be answered about.
fn take_queued(queue: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    batch.retain(|job| !job.outcome.is_closed());
}

/// Sends each rotation of `batch` its outcome, and empties it.
fn answer(batch: &mut Vec<Job>, outcomes: Vec<DbResult<Option<RotatedRow>>>) {
    for (job, outcome) in batch.drain(..).zip(outcomes) {
        // A request that went away meanwhile no longer waits for its outcome.
        let _ = job.outcome.send(outcome);
    }
}

/// Every job's failure, logged once.
fn failed(batch: &[Job], error: &dyn std::fmt::Display) -> Vec<DbResult<Option<RotatedRow>>> {
    let failure = error.to_string();
    tracing::error!(error = %failure, rotations = batch.len(), "a group commit of refresh rotations failed");
    batch.iter().map(|_| Err(DbError::Writer(failure.clone()))).collect()
}

/// Runs the batch on PostgreSQL: one statement per round of distinct tokens (one round, unless a
/// token was presented twice), in one transaction; reconnects first if needed. A batch that meets
/// a deadlock (another process rotating the same tokens in another order) is rolled back by the
/// server and run once more.
async fn commit_postgres(
    connection: &mut Option<PgConnection>,
    url: &str,
    batch: &[Job],
) -> Vec<DbResult<Option<RotatedRow>>> {
    let rounds = rounds(batch);
    let mut attempt = 1;
    loop {
        match run_postgres(connection, url, batch, &rounds).await {
            Ok(mut outcomes) => return (0..batch.len()).map(|index| Ok(outcomes.remove(&index))).collect(),
            Err(error) if attempt == 1 && is_deadlock(&error) => attempt += 1,
            Err(error) => {
                // The connection may be broken: the next batch gets a new one.
                *connection = None;
                return failed(batch, &error);
            }
        }
    }
}

/// A writer's connection. It runs [`ROTATE_MANY`] only, which finds every row by its primary key;
/// sequential scans are off on it, because on a table not analyzed yet (a new issuer, for up to a
/// minute) the planner would choose one and scan every token for each batch (measured: 2.0k
/// refreshes/s instead of 8.4k on a new database).
async fn connect_postgres(url: &str) -> Result<PgConnection, sqlx::Error> {
    let mut connection = PgConnection::connect(url).await?;
    sqlx::query("SET enable_seqscan = off").execute(&mut connection).await?;
    Ok(connection)
}

/// True for PostgreSQL's deadlock and serialization failures, after which a retry may succeed.
fn is_deadlock(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database) if matches!(database.code().as_deref(), Some("40P01" | "40001")))
}

/// One attempt of [`commit_postgres`]: the rotated jobs by index.
async fn run_postgres(
    connection: &mut Option<PgConnection>,
    url: &str,
    batch: &[Job],
    rounds: &[Vec<usize>],
) -> Result<HashMap<usize, RotatedRow>, sqlx::Error> {
    let connection = match connection {
        Some(connection) => connection,
        None => connection.insert(connect_postgres(url).await?),
    };
    if let [round] = rounds {
        return rotate_many(connection, batch, round).await;
    }
    let mut transaction = connection.begin().await?;
    let mut outcomes = HashMap::new();
    for round in rounds {
        outcomes.extend(rotate_many(&mut transaction, batch, round).await?);
    }
    transaction.commit().await?;
    Ok(outcomes)
}

/// The batch's job indexes in rounds: each round names each token at most once.
fn rounds(batch: &[Job]) -> Vec<Vec<usize>> {
    let mut rounds: Vec<(HashSet<&str>, Vec<usize>)> = Vec::new();
    for (index, job) in batch.iter().enumerate() {
        let hash = job.rotation.hash.as_str();
        match rounds.iter_mut().find(|(hashes, _)| !hashes.contains(hash)) {
            Some((hashes, indexes)) => {
                hashes.insert(hash);
                indexes.push(index);
            }
            None => rounds.push((HashSet::from([hash]), vec![index])),
        }
    }
    rounds.into_iter().map(|(_, indexes)| indexes).collect()
}

/// A row of [`ROTATE_MANY`]: a rotation that won, by its 1-based position in the arrays.
#[derive(sqlx::FromRow)]
struct RotatedManyRow {
    position: i32,
    family_id: String,
    user_id: String,
    roles: String,
    scope: Option<String>,
    audiences: Option<String>,
}

/// One statement for the rotations `round` of `batch` (distinct tokens): the rotated ones by
/// job index.
async fn rotate_many(
    connection: &mut PgConnection,
    batch: &[Job],
    round: &[usize],
) -> Result<HashMap<usize, RotatedRow>, sqlx::Error> {
    let rotations: Vec<&Rotation> = round.iter().map(|&index| &batch[index].rotation).collect();
    let texts = |field: fn(&Rotation) -> &str| rotations.iter().map(|rotation| field(rotation)).collect::<Vec<_>>();
    let times = |field: fn(&Rotation) -> i64| rotations.iter().map(|rotation| field(rotation)).collect::<Vec<_>>();
    let rows: Vec<RotatedManyRow> = sqlx::query_as(ROTATE_MANY)
        .bind(texts(|rotation| &rotation.hash))
        .bind(texts(|rotation| &rotation.client_id))
        .bind(times(|rotation| to_db_time(rotation.now)))
        .bind(times(|rotation| rotation.spent_after.map_or(i64::MAX, to_db_time)))
        .bind(texts(|rotation| &rotation.successor_hash))
        .bind(texts(|rotation| &rotation.access_jti))
        .bind(times(|rotation| to_db_time(rotation.idle_until)))
        .bind(times(|rotation| to_db_time(rotation.access_expires_at)))
        .fetch_all(connection)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            // `position` is 1-based, as `WITH ORDINALITY` counts.
            let index = *round.get(usize::try_from(row.position).ok()?.checked_sub(1)?)?;
            let RotatedManyRow { family_id, user_id, roles, scope, audiences, .. } = row;
            Some((index, RotatedRow { family_id, user_id, roles, scope, audiences }))
        })
        .collect())
}

/// Runs the batch on SQLite, in one transaction. A rotation's statements fail only when the
/// database does (I/O, a full disk), never for a refused token (which spends nothing): then the
/// transaction is rolled back and every rotation of the batch gets the failure. (So on
/// PostgreSQL.)
fn commit_sqlite(connection: &mut Connection, batch: &[Job]) -> Vec<DbResult<Option<RotatedRow>>> {
    let committed = (|| {
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let outcomes = batch.iter().map(|job| rotate(&transaction, &job.rotation)).collect::<Result<Vec<_>, _>>()?;
        transaction.commit()?;
        Ok::<_, rusqlite::Error>(outcomes)
    })();
    match committed {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(error) => failed(batch, &error),
    }
}

/// One rotation on SQLite, inside the writer's transaction: spend (reading the family and the
/// roles), insert the successor. `None` when the presented token was not spent.
fn rotate(connection: &Connection, rotation: &Rotation) -> rusqlite::Result<Option<RotatedRow>> {
    let now = to_db_time(rotation.now);
    let spent_after = rotation.spent_after.map_or(i64::MAX, to_db_time);
    // The row, and the family's expiry (the successor's cap).
    let spent: Option<(RotatedRow, i64)> = connection
        .prepare_cached(SPEND)?
        .query_row(params![now, rotation.hash, spent_after, rotation.client_id], |row| {
            let rotated = RotatedRow {
                family_id: row.get(0)?,
                user_id: row.get(1)?,
                roles: row.get(2)?,
                scope: row.get(4)?,
                audiences: row.get(5)?,
            };
            Ok((rotated, row.get(3)?))
        })
        .optional()?;
    let Some((rotated, family_expires_at)) = spent else { return Ok(None) };
    let expires_at = family_expires_at.min(to_db_time(rotation.idle_until));
    connection.prepare_cached(INSERT_TOKEN)?.execute(params![
        rotation.successor_hash,
        rotated.family_id,
        rotation.access_jti,
        to_db_time(rotation.access_expires_at),
        now,
        expires_at
    ])?;
    Ok(Some(rotated))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(hash: &str) -> Job {
        let rotation = Rotation {
            hash: hash.to_owned(),
            client_id: "web".to_owned(),
            now: 0,
            spent_after: None,
            successor_hash: String::new(),
            access_jti: String::new(),
            access_expires_at: 0,
            idle_until: 0,
        };
        Job { rotation, outcome: oneshot::channel().0 }
    }

    #[test]
    fn a_token_presented_twice_goes_to_the_next_round() {
        let batch: Vec<Job> = ["a", "b", "a", "c", "a", "b"].into_iter().map(job).collect();
        assert_eq!(rounds(&batch), [vec![0, 1, 3], vec![2, 5], vec![4]]);
        assert_eq!(rounds(&batch[..2]), [vec![0, 1]]);
        assert!(rounds(&[]).is_empty());
    }
}
