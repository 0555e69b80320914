//! Bearer-token authentication for `tandem serve`.
//!
//! Tokens come from `--token-file` (one per line; blank lines and `#` comments are skipped)
//! or the `TANDEM_TOKEN` variable (one token). Only their SHA-256 digests are kept. A
//! presented token is hashed and compared with every digest in constant time, so neither the
//! comparison's time nor an early exit says how much of a token was right. Tokens are never
//! logged: the access log and the metrics see routes and statuses only.
//!
//! `/health` stays open (load balancers probe it) and so does the search page's HTML shell
//! (it holds no data; its script asks for a token and sends it). Everything else, `/metrics`
//! included, needs `Authorization: Bearer TOKEN`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

/// Shortest token accepted: 16 characters (a random 128-bit token in hex is 32).
pub const MIN_TOKEN_CHARS: usize = 16;

/// The accepted tokens, as SHA-256 digests.
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl Tokens {
    /// Tokens from `file` (when given) and `env` (the value of `TANDEM_TOKEN`, when set);
    /// `None` when neither is given.
    ///
    /// # Errors
    /// A file that cannot be read, holds no token, or a token shorter than
    /// [`MIN_TOKEN_CHARS`]: the message names the file (or the variable) and the line.
    pub fn load(file: Option<&Path>, env: Option<&str>) -> Result<Option<Tokens>> {
        let mut digests = Vec::new();
        if let Some(file) = file {
            let text = std::fs::read_to_string(file).with_context(|| {
                format!(
                    "{}: cannot read the token file\n  fix: pass a readable file of tokens, one per line",
                    file.display()
                )
            })?;
            for (number, line) in text.lines().enumerate() {
                let token = line.trim();
                if token.is_empty() || token.starts_with('#') {
                    continue;
                }
                let place = format!("{} line {}", file.display(), number + 1);
                digests.push(digest_of_valid(token, &place)?);
            }
            if digests.is_empty() {
                bail!(
                    "{}: no token in the file\n  fix: write one token per line (e.g. `openssl rand -hex 32`)",
                    file.display()
                );
            }
        }
        if let Some(token) = env {
            digests.push(digest_of_valid(token.trim(), "TANDEM_TOKEN")?);
        }
        Ok((!digests.is_empty()).then_some(Tokens { digests }))
    }

    /// Whether `presented` is one of the tokens, in time independent of its content.
    pub fn accepts(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every digest is compared in full; `|` and `&` do not short-circuit.
        self.digests.iter().fold(false, |found, digest| {
            found | same_digest(digest, &presented)
        })
    }
}

fn digest_of_valid(token: &str, place: &str) -> Result<[u8; 32]> {
    let chars = token.chars().count();
    if chars < MIN_TOKEN_CHARS {
        bail!(
            "{place}: a token of {chars} characters is too short to be secret (at least {MIN_TOKEN_CHARS})\n  fix: use a random token, e.g. `openssl rand -hex 32`"
        );
    }
    if token.chars().any(char::is_whitespace) {
        bail!("{place}: a token has white space inside it\n  fix: one token per line, no spaces");
    }
    Ok(Sha256::digest(token.as_bytes()).into())
}

/// Equality of two digests with no early exit.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Refuses to serve a non-loopback address openly unless asked to.
///
/// # Errors
/// A non-loopback `addr` without tokens and without `insecure_no_auth`.
pub fn check_exposure(
    addr: SocketAddr,
    tokens: Option<&Tokens>,
    insecure_no_auth: bool,
) -> Result<()> {
    if tokens.is_none() && !insecure_no_auth && !addr.ip().is_loopback() {
        bail!(
            "refusing to serve {addr} without authentication: anyone who can reach it could search the index\n  fix: pass --token-file FILE (or set TANDEM_TOKEN), or --insecure-no-auth to serve it openly"
        );
    }
    Ok(())
}

/// Routes anyone may call.
fn is_open(path: &str) -> bool {
    matches!(path, "/health" | "/")
}

/// Middleware: a request for a closed route without an accepted bearer token gets 401.
pub async fn require_token(
    State(tokens): State<Arc<Tokens>>,
    request: Request,
    next: Next,
) -> Response {
    if is_open(request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if tokens.accepts(token.trim()) => next.run(request).await,
        Some(_) => unauthorized("the bearer token is not accepted"),
        None => unauthorized("this server needs `Authorization: Bearer TOKEN`"),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response = super::error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"tandem\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_a_file_and_the_variable_are_each_accepted_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(
            &file,
            "# team tokens\n0123456789abcdef0123\n\n  fedcba9876543210fedc  \n",
        )
        .unwrap();
        let tokens = Tokens::load(Some(&file), Some("from-the-environment-1"))
            .unwrap()
            .unwrap();
        for good in [
            "0123456789abcdef0123",
            "fedcba9876543210fedc",
            "from-the-environment-1",
        ] {
            assert!(tokens.accepts(good), "{good}");
        }
        for bad in [
            "",
            "0123456789abcdef012",
            "0123456789abcdef01234",
            "# team tokens",
        ] {
            assert!(!tokens.accepts(bad), "{bad:?}");
        }
        assert!(Tokens::load(None, None).unwrap().is_none());
    }

    #[test]
    fn bad_token_sources_name_the_place_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "long-enough-token-1\nshort\n").unwrap();
        let e = format!("{:#}", Tokens::load(Some(&file), None).err().unwrap());
        assert!(
            e.contains("tokens line 2") && e.contains("too short") && e.contains("fix:"),
            "{e}"
        );
        std::fs::write(&file, "# only a comment\n\n").unwrap();
        let e = format!("{:#}", Tokens::load(Some(&file), None).err().unwrap());
        assert!(e.contains("no token in the file"), "{e}");
        let e = format!(
            "{:#}",
            Tokens::load(Some(&dir.path().join("missing")), None)
                .err()
                .unwrap()
        );
        assert!(e.contains("missing") && e.contains("cannot read"), "{e}");
        let e = format!(
            "{:#}",
            Tokens::load(None, Some("has a space in it!"))
                .err()
                .unwrap()
        );
        assert!(
            e.contains("TANDEM_TOKEN") && e.contains("white space"),
            "{e}"
        );
    }

    #[test]
    fn only_loopback_may_be_served_without_tokens_unless_asked() {
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let v6_loopback: SocketAddr = "[::1]:8080".parse().unwrap();
        assert!(check_exposure(loopback, None, false).is_ok());
        assert!(check_exposure(v6_loopback, None, false).is_ok());
        let e = check_exposure(public, None, false).unwrap_err().to_string();
        assert!(
            e.contains("--token-file") && e.contains("--insecure-no-auth"),
            "{e}"
        );
        assert!(check_exposure(public, None, true).is_ok());
        let tokens = Tokens::load(None, Some("a-long-enough-token"))
            .unwrap()
            .unwrap();
        assert!(check_exposure(public, Some(&tokens), false).is_ok());
    }
}
