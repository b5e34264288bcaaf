//! The clock: the only module that reads the wall clock.
//!
//! Business code takes `now` as an argument; the app hands it `clock.now()`. Tests swap in a
//! [`ManualClock`] so that time-dependent rules (start in the past, event due) are exact.

use std::sync::{Arc, Mutex};

use chrono::{NaiveDateTime, TimeDelta, Utc};

/// A source of the current time, naive UTC as everywhere in Blazar.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> NaiveDateTime;
}

pub type SharedClock = Arc<dyn Clock>;

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> NaiveDateTime {
        Utc::now().naive_utc()
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<NaiveDateTime>,
}

impl ManualClock {
    pub fn new(now: NaiveDateTime) -> Self {
        Self {
            now: Mutex::new(now),
        }
    }

    pub fn set(&self, now: NaiveDateTime) {
        *self.now.lock().expect("clock lock") = now;
    }

    pub fn advance(&self, by: TimeDelta) {
        let mut now = self.now.lock().expect("clock lock");
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> NaiveDateTime {
        *self.now.lock().expect("clock lock")
    }
}
