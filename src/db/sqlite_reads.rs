//! SQLite's direct read path: a few rusqlite connections, each used on a blocking thread for one
//! whole read (one snapshot), for the listings whose cost is per row.
//!
//! Why not sqlx here: its SQLite driver runs each connection on a worker thread and hands every
//! row to the async task through a channel, copies each value (`sqlite3_value_dup`, a malloc per
//! column) and decodes each datetime by trying one format after another. For a page of 100 leases
//! (~500 rows) that was most of the request (docs/performance.md). Here a read is one hop to a
//! blocking thread, rows are read in place, and datetimes are parsed once, by hand.
//!
//! Only reads go this way: every write still goes through sqlx's pool and [`super::Db::write`],
//! so the write turn and its guarantees are unchanged. WAL mode lets these connections read while
//! a write is open; a read sees the database as of its `BEGIN` (one snapshot for its queries).
//! An in-memory database is private to sqlx's connection, so it has no direct read path.

use std::{path::PathBuf, str::FromStr, sync::Mutex, time::Duration};

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use rusqlite::{Connection, OpenFlags, Transaction, types::ValueRef};
use sea_orm::{DbErr, sqlx::sqlite::SqliteConnectOptions};
use tokio::sync::Semaphore;

/// Readers open at once; more wait. Two cores: more readers only add memory (each has its cache).
const READERS: usize = 2;
/// Each reader's page cache in KiB (SQLite's default is 2 MB). A listing at 100,000 leases
/// touches a few thousand pages; re-reading them from the OS costs a `pread` each.
const CACHE_KIB: i64 = 8 * 1024;

/// The pool of read connections to one SQLite file.
#[derive(Debug)]
pub struct SqliteReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    turns: Semaphore,
}

impl SqliteReads {
    /// The read path for the database at `url`, or `None` when it has none (not SQLite, or an
    /// in-memory database). Connections are opened when first needed.
    pub fn for_url(url: &str) -> Option<SqliteReads> {
        let opts = SqliteConnectOptions::from_str(url).ok()?;
        let path = opts.get_filename().to_path_buf();
        let name = path.to_string_lossy();
        if url.contains(":memory:") || url.contains("mode=memory") || name.starts_with("file:") {
            return None;
        }
        Some(SqliteReads {
            path,
            idle: Mutex::new(Vec::new()),
            turns: Semaphore::new(READERS),
        })
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // This connection never writes, whatever a query says.
        conn.pragma_update(None, "query_only", true)?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        Ok(conn)
    }

    /// Runs `read` in one read transaction on a blocking thread and returns what it returns.
    pub async fn read<T, E, F>(&self, read: F) -> Result<T, E>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbErr> + Send + 'static,
    {
        let _turn = self
            .turns
            .acquire()
            .await
            .map_err(|_| DbErr::Custom("the read path is closed".into()))?;
        let idle = self.idle.lock().expect("idle readers").pop();
        let mut conn = match idle {
            Some(c) => c,
            None => self.open().map_err(read_error)?,
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = match conn.transaction() {
                Ok(txn) => {
                    let r = read(&txn);
                    // A read transaction has nothing to commit; ending it frees its snapshot.
                    let _ = txn.rollback();
                    r
                }
                Err(e) => Err(read_error(e).into()),
            };
            (conn, result)
        })
        .await
        .map_err(|e| DbErr::Custom(format!("a database read stopped: {e}")))?;
        self.idle.lock().expect("idle readers").push(conn);
        result
    }
}

/// A rusqlite error as the service layer's database error.
pub fn read_error(e: rusqlite::Error) -> DbErr {
    DbErr::Custom(format!("database read: {e}"))
}

/// A datetime column as sqlx stores it (`2026-12-01 20:04:44.123456`, see its `Encode` for
/// `NaiveDateTime`), parsed without trying formats; other text forms sqlx accepts are tried
/// after that, so rows written by anything sqlx can read are read the same here.
pub fn datetime(v: ValueRef<'_>) -> Result<NaiveDateTime, DbErr> {
    let text = match v {
        ValueRef::Text(t) => std::str::from_utf8(t).ok(),
        _ => None,
    };
    text.and_then(|t| parse_stored(t).or_else(|| parse_other(t)))
        .ok_or_else(|| DbErr::Custom(format!("invalid datetime in the database: {v:?}")))
}

/// A nullable datetime column.
pub fn datetime_opt(v: ValueRef<'_>) -> Result<Option<NaiveDateTime>, DbErr> {
    match v {
        ValueRef::Null => Ok(None),
        v => datetime(v).map(Some),
    }
}

/// `YYYY-MM-DD HH:MM:SS[.fraction]` (or with `T`), the form sqlx writes.
fn parse_stored(s: &str) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if b[10] != b' ' && b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let mut nanos = 0u32;
    if b.len() > 19 {
        let frac = &b[20..];
        if b[19] != b'.' || frac.is_empty() || frac.len() > 9 {
            return None;
        }
        for (i, &c) in frac.iter().enumerate() {
            if !c.is_ascii_digit() {
                return None;
            }
            nanos += u32::from(c - b'0') * 10u32.pow(8 - i as u32);
        }
    }
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let time = NaiveTime::from_hms_nano_opt(num(11..13)?, num(14..16)?, num(17..19)?, nanos)?;
    Some(NaiveDateTime::new(date, time))
}

/// The other text forms sqlx's SQLite driver decodes (with an offset, the local time at it, as
/// sqlx's `naive_local` gives).
fn parse_other(s: &str) -> Option<NaiveDateTime> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.naive_local());
    }
    const FORMATS: [&str; 12] = [
        "%F %T%.f",
        "%F %R",
        "%F %RZ",
        "%F %R%:z",
        "%F %T%.fZ",
        "%F %T%.f%:z",
        "%FT%R",
        "%FT%RZ",
        "%FT%R%:z",
        "%FT%T%.f",
        "%FT%T%.fZ",
        "%FT%T%.f%:z",
    ];
    FORMATS.iter().find_map(|f| {
        DateTime::parse_from_str(s, f)
            .map(|d| d.naive_local())
            .or_else(|_| NaiveDateTime::parse_from_str(s, f))
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%F %T%.f").unwrap()
    }

    #[test]
    fn reads_what_sqlx_writes() {
        for t in [
            at("2026-12-01 20:04:44"),
            at("2026-12-01 20:04:44.123456"),
            at("2030-02-28 00:00:00.000001"),
            at("1999-12-31 23:59:59.999999999"),
        ] {
            // sqlx's own encoding of a NaiveDateTime.
            let stored = t.format("%F %T%.f").to_string();
            assert_eq!(parse_stored(&stored), Some(t), "{stored}");
            assert_eq!(datetime(ValueRef::Text(stored.as_bytes())).unwrap(), t);
        }
    }

    #[test]
    fn reads_the_other_forms_sqlx_reads() {
        let t = at("2026-12-01 20:04:00");
        for s in [
            "2026-12-01T20:04:00",
            "2026-12-01 20:04",
            "2026-12-01T20:04Z",
            "2026-12-01T20:04:00+00:00",
        ] {
            assert_eq!(datetime(ValueRef::Text(s.as_bytes())).unwrap(), t, "{s}");
        }
        assert_eq!(
            datetime(ValueRef::Text(b"2026-12-01T22:04:00+02:00")).unwrap(),
            at("2026-12-01 22:04:00"),
            "sqlx keeps the local time at the offset"
        );
    }

    #[test]
    fn refuses_what_is_not_a_datetime() {
        for s in [
            "",
            "2026-12-01",
            "2026-13-01 00:00:00",
            "2026-12-01 20:04:44.",
            "x",
        ] {
            assert!(datetime(ValueRef::Text(s.as_bytes())).is_err(), "{s}");
        }
        assert!(datetime(ValueRef::Integer(5)).is_err());
        assert_eq!(datetime_opt(ValueRef::Null).unwrap(), None);
    }
}
