//! Any bytes as the server's requests: a `POST /search` body, a `POST /admin/reload` body and
//! the query string of `POST /search/image`, parsed by the server's own parser (this target
//! compiles `crates/tandem-cli/src/server/request.rs` itself). Errors, never a panic; a
//! parsed search can be described for the access log.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/tandem-cli/src/server/request.rs"]
#[allow(dead_code)]
mod request;

fuzz_target!(|data: &[u8]| {
    if let Ok(search) = request::parse_search(data) {
        let _ = search.describe();
    }
    let _ = request::parse_reload(data);
    if let Ok(query) = std::str::from_utf8(data) {
        let _ = request::parse_image_query(Some(query));
    }
});
