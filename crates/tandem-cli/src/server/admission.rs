//! Overload control: a bound on the searches running at once and on those waiting for a turn,
//! and a deadline on every request.
//!
//! A search whose body has been read takes a permit, or waits in a queue of bounded length;
//! when the queue is full it is answered 503 with `Retry-After` at once, so an overloaded
//! server sheds load instead of letting every latency grow. The body is read before the
//! permit is taken: a slow upload holds its connection, not a search slot. Every request,
//! search or not, must be answered within the request timeout (a slow body included), else
//! it gets 503 too.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AppState;
use super::metrics::Metrics;

/// The server's bounds, from `tandem serve`'s options.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Searches running at once.
    pub max_concurrent: usize,
    /// Searches waiting for a turn before new ones are refused with 503.
    pub queue: usize,
    /// Longest time from a request's headers to its answer.
    pub request_timeout: Duration,
    /// Longest time a client may take to send a request's line and headers.
    pub header_timeout: Duration,
}

impl Limits {
    /// One search per core, a queue of 64, 10 s per request and 10 s for the headers.
    pub fn for_this_machine() -> Self {
        Limits {
            max_concurrent: std::thread::available_parallelism().map_or(1, usize::from),
            queue: 64,
            request_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// The permits and the queue.
pub struct Admission {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
}

/// A search's turn; dropping it lets the next one in.
pub struct Turn {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}

/// Counts one waiting search for as long as it lives (a request abandoned at its deadline
/// leaves the queue too).
struct InQueue<'a> {
    admission: &'a Admission,
    metrics: &'a Metrics,
}

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        let left = self.admission.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
        self.metrics.queue_depth.set(left as i64);
    }
}

impl Admission {
    pub fn new(limits: &Limits) -> Self {
        Admission {
            permits: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            waiting: AtomicUsize::new(0),
            queue: limits.queue,
        }
    }

    /// A turn for one search: at once, after waiting in the queue, or a 503 when the queue is
    /// full.
    ///
    /// # Errors
    /// The 503 response, with `Retry-After`.
    pub async fn enter(&self, metrics: &Arc<Metrics>) -> Result<Turn, Response> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let depth = self.waiting.fetch_add(1, Ordering::SeqCst) + 1;
                let in_queue = InQueue {
                    admission: self,
                    metrics,
                };
                if depth > self.queue {
                    drop(in_queue);
                    metrics.rejected.with_label_values(&["queue_full"]).inc();
                    return Err(busy(format!(
                        "the server is busy: {} searches waiting; try again shortly",
                        self.queue
                    )));
                }
                metrics.queue_depth.set(depth as i64);
                let permit = self.permits.clone().acquire_owned().await;
                drop(in_queue);
                permit.expect("the semaphore is never closed")
            }
        };
        metrics.in_flight.inc();
        Ok(Turn {
            _permit: permit,
            metrics: metrics.clone(),
        })
    }
}

/// 503 with `Retry-After: 1` and a JSON error.
pub fn busy(message: String) -> Response {
    let mut response = super::error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Middleware: a request not answered within the request timeout gets 503. Admin routes are
/// exempt: a reload reads a whole index, which may take longer, and is finished either way.
pub async fn deadline(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().starts_with("/admin/") {
        return next.run(request).await;
    }
    let timeout = state.limits.request_timeout;
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            state.metrics.rejected.with_label_values(&["timeout"]).inc();
            busy(format!(
                "no answer within the request timeout of {:.1} s (a slow upload, or a busy server)",
                timeout.as_secs_f64()
            ))
        }
    }
}
