//! `tandem serve`: an index over HTTP (axum). One read-only index shared by every request;
//! queries by id, by raw feature vector or in words; Prometheus metrics; graceful shutdown.

mod access_log;
mod admission;
mod auth;
mod backend;
mod batcher;
mod listen;
mod metrics;
mod query;
pub mod request;
mod served;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
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

pub use access_log::AccessLog;
pub use admission::Limits;
pub use auth::Tokens;
pub use batcher::DEFAULT_BATCH;
pub use query::{QueryText, SearchRequest};
pub use served::{Served, Source};

/// Largest request body accepted: a photo upload to `/search/image` fits; a 1M-float
/// feature vector as JSON does not.
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// What every handler shares.
pub struct AppState {
    /// The index answering now; a reload replaces it whole.
    served: RwLock<Arc<Served>>,
    /// How to open the index again; `None`: this server cannot reload.
    source: Option<Source>,
    /// One reload at a time.
    reloading: std::sync::Mutex<()>,
    pub metrics: Arc<metrics::Metrics>,
    /// Bounds on searches and requests.
    pub limits: Limits,
    admission: admission::Admission,
    /// Bearer tokens every route but `/health` and `/` needs; `None`: open.
    pub tokens: Option<Arc<Tokens>>,
    /// One JSON line per request, when asked for.
    pub access_log: Option<AccessLog>,
}

impl AppState {
    /// The state serving `served`, reloadable from `source` when given.
    pub fn new(served: Served, source: Option<Source>) -> Self {
        let metrics = Arc::new(metrics::Metrics::new());
        metrics.index_generation.set(served.generation as i64);
        AppState {
            served: RwLock::new(Arc::new(served)),
            source,
            reloading: std::sync::Mutex::new(()),
            metrics,
            limits: Limits::for_this_machine(),
            admission: admission::Admission::new(&Limits::for_this_machine()),
            tokens: None,
            access_log: None,
        }
    }

    /// The same state with other bounds.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.admission = admission::Admission::new(&limits);
        self.limits = limits;
        self
    }

    /// The index answering now (a request keeps it to its end).
    pub fn served(&self) -> Arc<Served> {
        self.served
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Opens the index again (from `folder`, else the folder it was served from) and switches
    /// to it; requests in flight finish on the old one. Blocking: the index is read here.
    ///
    /// # Errors
    /// When the new index cannot be opened: the old one keeps serving.
    pub fn reload(&self, folder: Option<&std::path::Path>) -> Result<Arc<Served>> {
        let Some(source) = &self.source else {
            anyhow::bail!("this server was not started from an index folder; it cannot reload");
        };
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = source.open(folder).inspect_err(|_| {
            self.metrics.reload_failures.inc();
        })?;
        next.generation = self.served().generation + 1;
        let next = Arc::new(next);
        *self
            .served
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next.clone();
        self.metrics.index_generation.set(next.generation as i64);
        let (images, captions) = next.backend.counts();
        tracing::info!(
            "reloaded: generation {}, {images} images and {captions} captions from {}",
            next.generation,
            folder.map_or_else(|| source.describe(), |f| f.display().to_string())
        );
        Ok(next)
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
        .route("/admin/reload", post(reload))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(refuse_oversized));
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
        let state = Arc::new(state);
        reload_on_hangup(state.clone());
        listen::serve(listener, router(state), header_timeout, shutdown_signal()).await;
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
    let method = request.method().clone();
    let id = state.access_log.as_ref().map(AccessLog::next_id);
    let started = Instant::now();
    let mut response = next.run(request).await;
    let took = started.elapsed();
    state.metrics.record(&route, response.status(), took);
    if let (Some(log), Some(id)) = (&state.access_log, id) {
        let note = response.extensions().get::<access_log::SearchNote>();
        log.write(id, &method, &route, response.status(), took, note);
        response
            .headers_mut()
            .insert("x-request-id", access_log::header_value(id));
    }
    response
}

/// A 4xx/5xx answer with a JSON body `{"error": "..."}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}

/// Bodies announced longer than this are not even drained before the 413: the connection is
/// closed at once.
const DRAIN_AT_MOST: u64 = 64 << 20;

/// A body whose `Content-Length` is over [`MAX_BODY_BYTES`] gets 413 without reaching a
/// handler; up to [`DRAIN_AT_MOST`] bytes of it are read and dropped first. Answering while
/// the client is still sending would close the connection on unread data, which resets it,
/// and the client would see a broken pipe instead of the answer.
async fn refuse_oversized(request: Request, next: Next) -> Response {
    use http_body_util::BodyExt;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let Some(length) = declared.filter(|&n| n > MAX_BODY_BYTES as u64) else {
        return next.run(request).await;
    };
    if length <= DRAIN_AT_MOST {
        let mut body = request.into_body();
        while let Some(Ok(_)) = body.frame().await {}
    }
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("length limit exceeded: the body is {length} bytes, at most {MAX_BODY_BYTES}"),
    )
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
    let request = match request::parse_search(&body) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let note = access_log::SearchNote {
        k: request.k,
        direction: request.direction,
        query: request.describe(),
    };
    let mut response = search_request(state, request).await;
    response.extensions_mut().insert(note);
    response
}

/// A parsed search: its turn, then the work off the async threads.
async fn search_request(state: Arc<AppState>, request: SearchRequest) -> Response {
    let served = state.served();
    let turn = match state.admission.enter(&state.metrics).await {
        Ok(turn) => turn,
        Err(busy) => return busy,
    };
    // Embedding and ranking are CPU work: off the async threads. The turn ends with the work,
    // even when the request's deadline abandons it first.
    let job = move || {
        let answer = query::run(&served, request);
        drop(turn);
        answer
    };
    match tokio::task::spawn_blocking(job).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(query::Rejected(message, status))) => error(status, message),
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
    uri: axum::http::Uri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let params = match request::parse_image_query(uri.query()) {
        Ok(params) => params,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_error(rejection),
    };
    let note = access_log::SearchNote {
        k: params.k,
        direction: Some(tandem::index::Direction::ImageToText),
        query: format!("picture upload ({} bytes)", body.len()),
    };
    let served = state.served();
    let turn = match state.admission.enter(&state.metrics).await {
        Ok(turn) => turn,
        Err(mut busy) => {
            busy.extensions_mut().insert(note);
            return busy;
        }
    };
    let job = move || {
        let answer = query::run_picture(
            &served,
            query::Picture::Upload(body.to_vec()),
            params.k,
            params.exact,
        );
        drop(turn);
        answer
    };
    let mut response = match tokio::task::spawn_blocking(job).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(query::Rejected(message, status))) => error(status, message),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("search failed: {e}"),
        ),
    };
    response.extensions_mut().insert(note);
    response
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let served = state.served();
    let (images, captions) = served.backend.counts();
    Json(serde_json::json!({
        "status": "ok",
        "generation": served.generation,
        "images": images,
        "captions": captions,
        "dim": served.backend.dim(),
        "search": served.backend.describe(),
        "text_queries": served.text.as_ref().map(QueryText::describe),
        "picture_queries": served.pictures.as_ref().map(|p| p.record().describe()),
    }))
    .into_response()
}

/// Image `id`'s file, when the index lists image files (from the dataset's image_files.txt).
async fn image(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let served = state.served();
    if !served.backend.has_image_files() {
        return error(
            StatusCode::NOT_FOUND,
            "this index has no image files (its dataset folder had no image_files.txt)",
        );
    }
    let (images, _) = served.backend.counts();
    let Some(number) = id.parse::<usize>().ok().filter(|&i| i < images) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "image `{id}` is not an image id: the index has images 0..{}",
                images.saturating_sub(1)
            ),
        );
    };
    let path = match tokio::task::spawn_blocking(move || served.backend.image_file(number)).await {
        Ok(Ok(Some(path))) => path,
        Ok(Ok(None)) => {
            return error(StatusCode::NOT_FOUND, format!("image {id} has no file"));
        }
        Ok(Err(e)) => return error(StatusCode::BAD_GATEWAY, format!("image {id}: {e:#}")),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("image {id}: {e}"),
            );
        }
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
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, mime)], bytes).into_response(),
        Err(e) => error(
            StatusCode::NOT_FOUND,
            format!("image {id}: {}: {e}", path.display()),
        ),
    }
}

/// `POST /admin/reload` (token-only): switches to the index of `{"index": FOLDER}`, or opens
/// the served folder again; answers the new generation, or 422 with the reason while the old
/// index keeps serving.
async fn reload(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    if state.tokens.is_none() {
        return error(
            StatusCode::FORBIDDEN,
            "admin routes need a token: start the server with --token-file (or send it SIGHUP to reload the same folder)",
        );
    }
    let request = match request::parse_reload(&body) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let worker = state.clone();
    let job = move || worker.reload(request.index.as_deref());
    match tokio::task::spawn_blocking(job).await {
        Ok(Ok(served)) => {
            let (images, captions) = served.backend.counts();
            Json(serde_json::json!({
                "generation": served.generation,
                "images": images,
                "captions": captions,
            }))
            .into_response()
        }
        Ok(Err(e)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("reload refused, still serving the previous index: {e:#}"),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload failed: {e}"),
        ),
    }
}

/// Reloads the served folder on every SIGHUP (Unix).
fn reload_on_hangup(state: Arc<AppState>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; reload through POST /admin/reload");
            return;
        };
        while hangups.recv().await.is_some() {
            let worker = state.clone();
            match tokio::task::spawn_blocking(move || worker.reload(None)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!("reload refused, still serving the previous index: {e:#}")
                }
                Err(e) => tracing::error!("reload failed: {e}"),
            }
        }
    });
    #[cfg(not(unix))]
    drop(state);
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn page(State(state): State<Arc<AppState>>) -> Html<String> {
    let served = state.served();
    let (images, captions) = served.backend.counts();
    Html(
        include_str!("page.html")
            .replace("{{images}}", &images.to_string())
            .replace("{{captions}}", &captions.to_string())
            .replace(
                "{{has_images}}",
                if served.backend.has_image_files() {
                    "true"
                } else {
                    "false"
                },
            )
            .replace(
                "{{words}}",
                if served.text.is_some() {
                    ""
                } else {
                    "disabled"
                },
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
