//! A connection (or a few) to one PostgreSQL server, driven by a small runtime of its own so
//! that callers stay synchronous: the CLI's commands, and the server's blocking search threads.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use super::url::redact;

/// How long a connection attempt may take unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Open connections to one database.
pub struct Database {
    runtime: Option<tokio::runtime::Runtime>,
    clients: Vec<Client>,
    next: AtomicUsize,
    /// The URL without its password, for messages.
    pub shown: String,
}

impl Database {
    /// Opens `connections` (at least one) connections to `url`.
    ///
    /// # Errors
    /// One message per cause, naming the URL without its password: a malformed URL, an
    /// unreachable server, a refused login, a missing database.
    pub fn connect(url: &str, connections: usize) -> Result<Self> {
        let shown = redact(url);
        let mut config: Config = url.parse().map_err(|e| {
            anyhow!(
                "{shown}: not a PostgreSQL connection string ({e})\n  fix: write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            )
        })?;
        if config.get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("tandem");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("postgres")
            .enable_all()
            .build()?;
        let clients = runtime.block_on(async {
            let mut clients = Vec::with_capacity(connections.max(1));
            for _ in 0..connections.max(1) {
                let (client, connection) = config
                    .connect(NoTls)
                    .await
                    .map_err(|e| explain(&e, &shown, "connecting"))?;
                let name = shown.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::warn!("{name}: connection lost: {e}");
                    }
                });
                clients.push(client);
            }
            Ok::<_, anyhow::Error>(clients)
        })?;
        Ok(Database {
            runtime: Some(runtime),
            clients,
            next: AtomicUsize::new(0),
            shown,
        })
    }

    /// Runs `work` to its end on this database's runtime (blocking the caller).
    pub fn run<F: Future>(&self, work: F) -> F::Output {
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .block_on(work)
    }

    /// The next connection, in turn, with its position.
    pub fn next_client(&self) -> (usize, &Client) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        (i, &self.clients[i])
    }

    /// Connection `i`.
    pub fn nth(&self, i: usize) -> &Client {
        &self.clients[i]
    }

    /// How many connections there are.
    pub fn connections(&self) -> usize {
        self.clients.len()
    }

    /// The first connection, for work that needs its session (locks, `SET`).
    pub fn session(&self) -> &Client {
        &self.clients[0]
    }

    /// A second connection where there is one (the first otherwise), for work beside the
    /// session's.
    pub fn client_other(&self) -> &Client {
        &self.clients[1 % self.clients.len()]
    }

    /// `e`, met while `doing`, as one message naming the database.
    pub fn explain(&self, e: &tokio_postgres::Error, doing: &str) -> anyhow::Error {
        explain(e, &self.shown, doing)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // Not `drop(runtime)`: that blocks, and a server may drop its last reference to an
        // old gallery on an async thread.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One message for a PostgreSQL error: what was being done, at which URL, why, and a fix
/// where there is an obvious one.
pub fn explain(e: &tokio_postgres::Error, shown: &str, doing: &str) -> anyhow::Error {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let fix = if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            "\n  fix: check the user and password in the URL (and the server's pg_hba.conf)"
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            "\n  fix: create the database (`createdb NAME`) or name an existing one in the URL"
        } else if *code == SqlState::QUERY_CANCELED {
            "\n  fix: the server's statement_timeout cut this statement short; raise it for this role (`ALTER ROLE ... SET statement_timeout = ...`) or in the URL (`?options=-c%20statement_timeout%3D0`)"
        } else {
            ""
        };
        let what = if *code == SqlState::QUERY_CANCELED {
            format!("{} (statement timeout)", db.message())
        } else {
            db.message().to_string()
        };
        return anyhow!("{shown}: {doing}: {what}{fix}");
    }
    if e.is_closed() {
        return anyhow!(
            "{shown}: {doing}: the connection was closed\n  fix: check that the server is still running; restart tandem (or reload the server) to reconnect"
        );
    }
    let cause = std::error::Error::source(e).map_or_else(|| e.to_string(), |s| s.to_string());
    if doing == "connecting" {
        return anyhow!(
            "{shown}: cannot reach the server ({cause})\n  fix: check the host and port in the URL, and that PostgreSQL is running and accepts connections there"
        );
    }
    anyhow!("{shown}: {doing}: {cause}")
}
