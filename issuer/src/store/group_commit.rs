//! Group commit for SQLite's refresh rotations: one thread owns one connection and commits the
//! rotations of concurrent requests in one transaction, so that many refreshes share one fsync
//! instead of queueing for the write lock one transaction (and one fsync) each.
//!
//! The writer runs its statements synchronously through rusqlite (on the libsqlite3 that sqlx
//! links too): through sqlx each statement is a hand-off to the connection's worker thread and
//! back, and a single writer doing that was the bottleneck (measured: 4.5k refreshes/s with the
//! machine half idle; see the README's figures).
//!
//! Durability is unchanged: a rotation's answer is sent only after the transaction that holds it
//! has committed (SQLite's `synchronous` stays as it is: FULL). A rotation whose request has gone
//! away before the writer reaches it is not run.

use super::sessions::{INSERT_TOKEN, RotatedRow, Rotation, SPEND};
use super::{DbError, DbResult, to_db_time};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};
use std::path::Path;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The most rotations one transaction commits.
const MAX_BATCH: usize = 256;

/// The most rotations waiting for the writer; a request beyond that waits for room.
const QUEUE: usize = 1024;

/// How long the writer waits for the write lock that another connection holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A spent token's family, and what its successor needs.
const FAMILY: &str =
    "SELECT f.user_id, u.roles, f.expires_at FROM refresh_families f JOIN users u ON u.id = f.user_id WHERE f.id = $1";

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
    /// Starts the writer on its own connection to the SQLite file at `path` (which exists: the
    /// pool has created and migrated it).
    pub(crate) fn start(path: &Path) -> DbResult<Self> {
        let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|error| DbError::Writer(error.to_string()))?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(|error| DbError::Writer(error.to_string()))?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || write(connection, queue))
            .map_err(|error| DbError::Writer(error.to_string()))?;
        Ok(Self { jobs })
    }

    /// Runs `rotation` in the next transaction the writer commits; its outcome once committed.
    pub(crate) async fn rotate(&self, rotation: Rotation) -> DbResult<Option<RotatedRow>> {
        let (outcome, answer) = oneshot::channel();
        self.jobs.send(Job { rotation, outcome }).await.map_err(|_| DbError::WriterGone)?;
        answer.await.map_err(|_| DbError::WriterGone)?
    }
}

/// The writer: takes what is queued (at least one rotation, at most [`MAX_BATCH`]), runs it in
/// one transaction, commits, answers each rotation, and starts over.
fn write(mut connection: Connection, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(job) = queue.blocking_recv() {
        batch.push(job);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // A request that went away (its client, or its timeout) gets no rotation it cannot answer.
        batch.retain(|job: &Job| !job.outcome.is_closed());
        let outcomes = commit(&mut connection, &batch);
        for (job, outcome) in batch.drain(..).zip(outcomes) {
            // A request that went away meanwhile no longer waits for its outcome.
            let _ = job.outcome.send(outcome);
        }
    }
}

/// Runs the batch's rotations in one transaction and commits it. A rotation's statements fail
/// only when the database does (I/O, a full disk), never for a refused token (which spends
/// nothing): then the transaction is rolled back and every rotation of the batch gets the failure.
fn commit(connection: &mut Connection, batch: &[Job]) -> Vec<DbResult<Option<RotatedRow>>> {
    let committed = (|| {
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let outcomes = batch.iter().map(|job| rotate(&transaction, &job.rotation)).collect::<Result<Vec<_>, _>>()?;
        transaction.commit()?;
        Ok::<_, rusqlite::Error>(outcomes)
    })();
    match committed {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(error) => {
            let failure = error.to_string();
            tracing::error!(error = %failure, rotations = batch.len(), "a group commit of refresh rotations failed");
            batch.iter().map(|_| Err(DbError::Writer(failure.clone()))).collect()
        }
    }
}

/// One rotation, inside the writer's transaction: spend, read the family and the roles, insert
/// the successor. `None` when the presented token was not spent.
fn rotate(connection: &Connection, rotation: &Rotation) -> rusqlite::Result<Option<RotatedRow>> {
    let now = to_db_time(rotation.now);
    let spent_after = rotation.spent_after.map_or(i64::MAX, to_db_time);
    let family_id: Option<String> = connection
        .prepare_cached(SPEND)?
        .query_row(params![now, rotation.hash, spent_after, rotation.client_id], |row| row.get(0))
        .optional()?;
    let Some(family_id) = family_id else { return Ok(None) };
    let (user_id, roles, family_expires_at): (String, String, i64) = connection
        .prepare_cached(FAMILY)?
        .query_row([&family_id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    let expires_at = family_expires_at.min(to_db_time(rotation.idle_until));
    connection.prepare_cached(INSERT_TOKEN)?.execute(params![
        rotation.successor_hash,
        family_id,
        rotation.access_jti,
        now,
        expires_at
    ])?;
    Ok(Some(RotatedRow { family_id, user_id, roles }))
}
