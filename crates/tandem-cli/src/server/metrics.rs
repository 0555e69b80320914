//! Prometheus metrics of the server: requests and latency by route and status; searches
//! running and waiting; requests refused for overload.

use std::time::Duration;

use axum::http::StatusCode;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    /// Searches running now.
    pub in_flight: IntGauge,
    /// Searches waiting for a turn now.
    pub queue_depth: IntGauge,
    /// Requests refused for overload, by reason (`queue_full`, `timeout`).
    pub rejected: IntCounterVec,
    /// The served index's generation: 1 at start, one more per reload.
    pub index_generation: IntGauge,
    /// Reloads refused because the new index could not be opened.
    pub reload_failures: prometheus::IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("tandem_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "tandem_errors_total",
                "HTTP requests answered 4xx or 5xx, by route",
            ),
            &["route"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "tandem_request_duration_seconds",
                "Time from request to response, by route",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new("tandem_searches_in_flight", "Searches running now")
            .expect("valid metric");
        let queue_depth = IntGauge::new(
            "tandem_search_queue_depth",
            "Searches waiting for a turn now",
        )
        .expect("valid metric");
        let rejected = IntCounterVec::new(
            Opts::new(
                "tandem_rejected_total",
                "Requests answered 503 for overload, by reason (queue_full, timeout)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let index_generation = IntGauge::new(
            "tandem_index_generation",
            "The served index: 1 at start, one more per successful reload",
        )
        .expect("valid metric");
        let reload_failures = prometheus::IntCounter::new(
            "tandem_reload_failures_total",
            "Reloads refused because the new index could not be opened",
        )
        .expect("valid metric");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(index_generation.clone()),
            Box::new(reload_failures.clone()),
            Box::new(errors.clone()),
            Box::new(latency.clone()),
            Box::new(in_flight.clone()),
            Box::new(queue_depth.clone()),
            Box::new(rejected.clone()),
        ] {
            registry.register(m).expect("registered once");
        }
        // Both reasons show from the start, at 0.
        for reason in ["queue_full", "timeout"] {
            rejected.with_label_values(&[reason]);
        }
        Metrics {
            registry,
            requests,
            errors,
            latency,
            in_flight,
            queue_depth,
            rejected,
            index_generation,
            reload_failures,
        }
    }

    pub fn record(&self, route: &str, status: StatusCode, took: Duration) {
        self.requests
            .with_label_values(&[route, status.as_str()])
            .inc();
        if status.is_client_error() || status.is_server_error() {
            self.errors.with_label_values(&[route]).inc();
        }
        self.latency
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("text encoding of gathered metrics")
    }
}
