//! `tandem serve`: an index over HTTP (axum). One read-only index shared by every request;
//! queries by id, by raw feature vector or in words; Prometheus metrics; graceful shutdown.

mod admission;
mod auth;
mod batcher;
mod listen;
mod metrics;
mod query;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tandem::index::{Index, SearchMode};

pub use admission::Limits;
pub use auth::Tokens;
pub use batcher::DEFAULT_BATCH;
pub use query::{Embedder, QueryText, SearchRequest};

/// Largest request body accepted: a photo upload to `/search/image` fits; a 1M-float
/// feature vector as JSON does not.
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// What every handler shares.
pub struct AppState {
    pub index: Arc<Index>,
    /// How requests search unless they ask for `"exact": true`.
    pub mode: SearchMode,
    /// Exact searches, batched across concurrent requests.
    pub exact: batcher::ExactBatcher,
    pub embedder: Embedder,
    pub text: Option<QueryText>,
    /// Encodes picture queries, when the index records its image encoder.
    pub pictures: Option<tandem::image::ImageEncoder>,
    pub metrics: Arc<metrics::Metrics>,
    /// Bounds on searches and requests.
    pub limits: Limits,
    admission: admission::Admission,
    /// Bearer tokens every route but `/health` and `/` needs; `None`: open.
    pub tokens: Option<Arc<Tokens>>,
}

impl AppState {
    /// The state for `index`; `text` encodes word queries when the index records an encoder;
    /// exact searches are scored up to `max_batch` at a time.
    pub fn new(index: Index, text: Option<QueryText>, mode: SearchMode, max_batch: usize) -> Self {
        let embedder = Embedder(std::sync::Mutex::new(index.model.clone()));
        let index = Arc::new(index);
        AppState {
            exact: batcher::ExactBatcher::start(index.clone(), max_batch),
            index,
            mode,
            embedder,
            text,
            pictures: None,
            metrics: Arc::new(metrics::Metrics::new()),
            limits: Limits::for_this_machine(),
            admission: admission::Admission::new(&Limits::for_this_machine()),
            tokens: None,
        }
    }

    /// The same state with other bounds.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.admission = admission::Admission::new(&limits);
        self.limits = limits;
        self
    }
}

/// The router: `/`, `POST /search`, `GET /health`, `GET /metrics`, `GET /image/{id}`; with
/// tokens, every route but `/health` and `/` needs one.
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/", get(page))
        .route("/search", post(search))
        .route("/search/image", post(search_image))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/image/{id}", get(image))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    if let Some(tokens) = &state.tokens {
        router = router.layer(middleware::from_fn_with_state(
            tokens.clone(),
            auth::require_token,
        ));
    }
    // The deadline outside the token check and the handlers; the metrics outermost, so
    // refused and timed-out requests are counted too.
    router
        .layer(middleware::from_fn_with_state(
            state.clone(),
            admission::deadline,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Refuses to serve a non-loopback `addr` without tokens unless `insecure_no_auth`.
///
/// # Errors
/// That refusal, saying what to pass.
pub fn check_exposure(addr: SocketAddr, state: &AppState, insecure_no_auth: bool) -> Result<()> {
    auth::check_exposure(addr, state.tokens.as_deref(), insecure_no_auth)
}

/// Serves until SIGTERM or Ctrl-C, then finishes the requests in flight. Prints
/// `listening on http://ADDR` on stdout once the port is bound (port 0: any free one).
///
/// # Errors
/// When the address cannot be bound.
pub fn serve(state: AppState, addr: SocketAddr) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}\n  fix: choose another --addr"))?;
        let bound = listener.local_addr()?;
        println!("listening on http://{bound}");
        use std::io::Write;
        std::io::stdout().flush().ok();
        let header_timeout = state.limits.header_timeout;
        listen::serve(
            listener,
            router(Arc::new(state)),
            header_timeout,
            shutdown_signal(),
        )
        .await;
        tracing::info!("shut down");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Counts every request and times it, by route and status.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .record(&route, response.status(), started.elapsed());
    response
}

/// A 4xx/5xx answer with a JSON body `{"error": "..."}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}

/// Over MAX_BODY_BYTES (413) or an unreadable body: a JSON error like every other.
fn body_error(rejection: BytesRejection) -> Response {
    error(
        rejection.status(),
        format!("{} (at most {MAX_BODY_BYTES} bytes)", rejection.body_text()),
    )
}

async fn search(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_error(rejection),
    };
    let request: SearchRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a search request: {e}"),
            );
        }
    };
    let turn = match state.admission.enter(&state.metrics).await {
        Ok(turn) => turn,
        Err(busy) => return busy,
    };
    // Embedding and ranking are CPU work: off the async threads. The turn ends with the work,
    // even when the request's deadline abandons it first.
    let worker = state.clone();
    let job = move || {
        let answer = query::run(&worker, request);
        drop(turn);
        answer
    };
    match tokio::task::spawn_blocking(job).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(query::Rejected(message))) => error(StatusCode::BAD_REQUEST, message),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("search failed: {e}"),
        ),
    }
}

/// `POST /search/image?k=10`: the body is a picture file (any format tandem decodes); answers
/// its nearest captions like `/search`.
async fn search_image(
    State(state): State<Arc<AppState>>,
    axum::extract::Query(params): axum::extract::Query<ImageParams>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_error(rejection),
    };
    let turn = match state.admission.enter(&state.metrics).await {
        Ok(turn) => turn,
        Err(busy) => return busy,
    };
    let worker = state.clone();
    let job = move || {
        let answer = query::run_picture(
            &worker,
            query::Picture::Upload(body.to_vec()),
            params.k,
            params.exact,
        );
        drop(turn);
        answer
    };
    match tokio::task::spawn_blocking(job).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(query::Rejected(message))) => error(StatusCode::BAD_REQUEST, message),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("search failed: {e}"),
        ),
    }
}

/// The query string of `/search/image`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageParams {
    #[serde(default = "query::default_k")]
    k: usize,
    #[serde(default)]
    exact: bool,
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let index = &state.index;
    Json(serde_json::json!({
        "status": "ok",
        "images": index.n_images(),
        "captions": index.n_texts(),
        "dim": index.dim,
        "search": match state.mode {
            SearchMode::Exact => "exact".to_string(),
            SearchMode::Approximate { ef } => format!("hnsw (ef {ef})"),
        },
        "text_queries": state.text.as_ref().map(QueryText::describe),
        "picture_queries": state.pictures.as_ref().map(|p| p.record().describe()),
    }))
    .into_response()
}

/// Image `id`'s file, when the index lists image files (from the dataset's image_files.txt).
async fn image(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(files) = &state.index.image_files else {
        return error(
            StatusCode::NOT_FOUND,
            "this index has no image files (its dataset folder had no image_files.txt)",
        );
    };
    let Some(path) = id.parse::<usize>().ok().and_then(|i| files.get(i)) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "image `{id}` is not an image id: the index has images 0..{}",
                files.len().saturating_sub(1)
            ),
        );
    };
    let mime = match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    match tokio::fs::read(path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, mime)], bytes).into_response(),
        Err(e) => error(
            StatusCode::NOT_FOUND,
            format!("image {id}: {}: {e}", path.display()),
        ),
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn page(State(state): State<Arc<AppState>>) -> Html<String> {
    Html(
        include_str!("page.html")
            .replace("{{images}}", &state.index.n_images().to_string())
            .replace("{{captions}}", &state.index.n_texts().to_string())
            .replace(
                "{{has_images}}",
                if state.index.image_files.is_some() {
                    "true"
                } else {
                    "false"
                },
            )
            .replace(
                "{{words}}",
                if state.text.is_some() { "" } else { "disabled" },
            )
            .replace(
                "{{needs_token}}",
                if state.tokens.is_some() {
                    "true"
                } else {
                    "false"
                },
            ),
    )
}
