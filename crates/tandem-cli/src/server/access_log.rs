//! The access log: one JSON line per request (`--access-log FILE`), with a request id that
//! is also sent back in `x-request-id`, the route, status, latency and, for searches, `k` and
//! the direction. What was searched for (an id, words, a picture's path) is logged only with
//! `--log-queries`; tokens and bodies never are.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::http::{HeaderValue, Method, StatusCode};
use serde::Serialize;
use tandem::index::Direction;

/// What a search handler tells the log about its request (a response extension).
#[derive(Debug, Clone)]
pub struct SearchNote {
    pub k: usize,
    pub direction: Option<Direction>,
    /// The query, for `--log-queries`: `id 3`, `text "a dog"`, `features (384 values)`, …
    pub query: String,
}

/// The log file and the request counter.
pub struct AccessLog {
    file: Mutex<std::fs::File>,
    log_queries: bool,
    next_id: AtomicU64,
}

#[derive(Serialize)]
struct Line<'a> {
    /// Seconds since the Unix epoch, when the answer was sent.
    ts: f64,
    id: u64,
    method: &'a str,
    route: &'a str,
    status: u16,
    ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    k: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    direction: Option<Direction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<&'a str>,
}

impl AccessLog {
    /// Appends to `path` (created when missing).
    ///
    /// # Errors
    /// When the file cannot be opened for appending.
    pub fn open(path: &Path, log_queries: bool) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| {
                format!(
                    "{}: cannot open the access log for appending\n  fix: pass a writable --access-log path",
                    path.display()
                )
            })?;
        Ok(AccessLog {
            file: Mutex::new(file),
            log_queries,
            next_id: AtomicU64::new(1),
        })
    }

    /// A new request's id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes one request's line (a failed write is reported once per failure, never fatal).
    pub fn write(
        &self,
        id: u64,
        method: &Method,
        route: &str,
        status: StatusCode,
        took: Duration,
        note: Option<&SearchNote>,
    ) {
        let line = Line {
            ts: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            id,
            method: method.as_str(),
            route,
            status: status.as_u16(),
            ms: took.as_secs_f64() * 1e3,
            k: note.map(|n| n.k),
            direction: note.and_then(|n| n.direction),
            query: note.filter(|_| self.log_queries).map(|n| n.query.as_str()),
        };
        let mut text = serde_json::to_string(&line).expect("plain data");
        text.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(text.as_bytes()) {
            tracing::warn!("access log: {e}");
        }
    }
}

/// The `x-request-id` header value of `id`.
pub fn header_value(id: u64) -> HeaderValue {
    HeaderValue::from_str(&id.to_string()).expect("digits are a valid header value")
}
