//! The database: connecting (SQLite or PostgreSQL), migrating, and write transactions.
//!
//! Every write runs in a [`WriteTxn`]. Writers are serialized: on SQLite by an in-process queue
//! plus `BEGIN IMMEDIATE` (so no request ever sees "database is locked"), on PostgreSQL by a
//! transaction-scoped advisory lock shared by every instance. "Is this host free? then book it"
//! is therefore atomic on both backends, and no host is booked twice.
//!
//! On a SQLite file, the lease listings and show read through [`sqlite_reads`] instead of sqlx.

use std::{
    ops::Deref,
    sync::Arc,
    time::{Duration, Instant},
};

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, SqliteTransactionMode, TransactionOptions, TransactionTrait,
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};
use tokio::sync::{Mutex, MutexGuard};

pub mod sqlite_reads;

use sqlite_reads::SqliteReads;

/// Key of the PostgreSQL advisory lock that serializes writers across instances.
const PG_WRITE_LOCK_KEY: i64 = 0x0b1a_2a00;
/// Key of the PostgreSQL advisory lock held while one instance applies migrations.
const PG_MIGRATION_LOCK_KEY: i64 = 0x0b1a_2a01;
/// PostgreSQL channel on which lease changes are announced to every instance's runner.
pub const PG_CHANGES_CHANNEL: &str = "blazar_lease_changes";

#[derive(Debug)]
pub struct Db {
    conn: DatabaseConnection,
    /// SQLite only: one writer at a time in this process, handed over in FIFO order.
    sqlite_writer: Option<Mutex<()>>,
    /// Where the waits for the write turn are recorded, once the app has its metrics.
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// SQLite files only: the direct read path for listings.
    reads: Option<SqliteReads>,
}

/// An open write transaction; dropping it without `commit` rolls back.
pub struct WriteTxn<'a> {
    txn: DatabaseTransaction,
    _turn: Option<MutexGuard<'a, ()>>,
}

impl Deref for WriteTxn<'_> {
    type Target = DatabaseTransaction;
    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

impl WriteTxn<'_> {
    pub async fn commit(self) -> Result<(), DbErr> {
        self.txn.commit().await
    }
}

impl Db {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, DbErr> {
        let mut opts = ConnectOptions::new(url.to_string());
        opts.max_connections(max_connections)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30))
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    // FULL: a lease acknowledged is a lease on disk, even after a power cut.
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10))
                    // sqlx hands rows from its SQLite thread to the task through a channel of
                    // 50; a page of 100 leases reads ~500 rows, and each time the channel filled
                    // the thread parked and was woken again (a third of a listing's CPU). Rows
                    // are small: let a whole page through at once.
                    .row_buffer_size(4096)
            });
        let conn = Database::connect(opts).await?;
        let sqlite = conn.get_database_backend() == DbBackend::Sqlite;
        Ok(Db {
            conn,
            sqlite_writer: sqlite.then(|| Mutex::new(())),
            metrics: None,
            reads: sqlite.then(|| SqliteReads::for_url(url)).flatten(),
        })
    }

    /// Records every wait for the write turn in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn waited_for_turn(&self, since: Instant) {
        if let Some(m) = &self.metrics {
            m.write_wait.observe_duration(since.elapsed());
        }
    }

    /// The direct read path, on a SQLite file.
    pub fn sqlite_reads(&self) -> Option<&SqliteReads> {
        self.reads.as_ref()
    }

    pub fn conn(&self) -> &DatabaseConnection {
        &self.conn
    }

    pub fn backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    /// Applies every pending migration. On PostgreSQL, instances starting together take turns
    /// (a session advisory lock on a connection of its own), so each migration runs once.
    pub async fn migrate(&self) -> Result<(), DbErr> {
        if self.backend() != DbBackend::Postgres {
            return Migrator::up(&self.conn, None).await;
        }
        use sea_orm::sqlx::{Connection, Executor};
        let lock_err = |e: sea_orm::sqlx::Error| DbErr::Custom(format!("migration lock: {e}"));
        let pool = self.conn.get_postgres_connection_pool();
        let mut lock = pool.acquire().await.map_err(lock_err)?.detach();
        lock.execute(
            sea_orm::sqlx::query("SELECT pg_advisory_lock($1)").bind(PG_MIGRATION_LOCK_KEY),
        )
        .await
        .map_err(lock_err)?;
        let result = Migrator::up(&self.conn, None).await;
        // Closing the session releases the lock, also when the migration failed.
        let _ = lock.close().await;
        result
    }

    /// Whether the schema is at the newest migration (for readiness checks; changes nothing).
    pub async fn migrations_current(&self) -> Result<bool, DbErr> {
        Ok(Migrator::get_pending_migrations_read_only(&self.conn)
            .await?
            .is_empty())
    }

    /// Tells every instance's runner that leases changed (PostgreSQL; a no-op on SQLite, where
    /// one process runs the runner). Best effort: runners also wake up on their own.
    pub async fn announce_change(&self) {
        if self.backend() == DbBackend::Postgres
            && let Err(e) = self
                .conn
                .execute_raw(sea_orm::Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_notify($1, '')",
                    [PG_CHANGES_CHANNEL.into()],
                ))
                .await
        {
            tracing::warn!(error = %e, "cannot announce a lease change");
        }
    }

    /// Begins a read-only transaction that sees one snapshot (a lease and its events read in two
    /// queries must not straddle a commit): REPEATABLE READ on PostgreSQL, where READ COMMITTED
    /// would take a new snapshot per statement; SQLite's deferred transaction does this already.
    pub async fn read(&self) -> Result<DatabaseTransaction, DbErr> {
        match self.backend() {
            DbBackend::Postgres => {
                self.conn
                    .begin_with_config(
                        Some(sea_orm::IsolationLevel::RepeatableRead),
                        Some(sea_orm::AccessMode::ReadOnly),
                    )
                    .await
            }
            _ => self.conn.begin().await,
        }
    }

    /// Begins a write transaction, waiting for this writer's turn. The wait recorded is until
    /// the turn is held: the queue and `BEGIN IMMEDIATE` on SQLite, the advisory lock on
    /// PostgreSQL (which waits for writers of every instance).
    pub async fn write(&self) -> Result<WriteTxn<'_>, DbErr> {
        let asked = Instant::now();
        match &self.sqlite_writer {
            Some(queue) => {
                let turn = queue.lock().await;
                let txn = self
                    .conn
                    .begin_with_options(TransactionOptions {
                        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                        ..Default::default()
                    })
                    .await?;
                self.waited_for_turn(asked);
                Ok(WriteTxn {
                    txn,
                    _turn: Some(turn),
                })
            }
            None => {
                let txn = self.conn.begin().await?;
                txn.execute_raw(sea_orm::Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_advisory_xact_lock($1)",
                    [PG_WRITE_LOCK_KEY.into()],
                ))
                .await?;
                self.waited_for_turn(asked);
                Ok(WriteTxn { txn, _turn: None })
            }
        }
    }
}
