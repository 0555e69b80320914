//! What a request may ask, parsed from its bytes: the body of `POST /search` and of
//! `POST /admin/reload`, and the query string of `POST /search/image`.
//!
//! Self-contained (serde, serde_json, serde_urlencoded and tandem's `Direction` only) so that
//! the fuzz target `fuzz/fuzz_targets/request.rs` compiles this very file.

use serde::Deserialize;
use tandem::index::Direction;

/// A search: exactly one of `id`, `features` or `text`.
///
/// - `{"id": 3, "direction": "text_to_image"}`: caption 3 of the index finds images;
///   `"image_to_text"`: image 3 finds captions.
/// - `{"features": [...], "direction": ...}`: raw text features (text→image) or raw image
///   features (image→text), embedded by the index's model.
/// - `{"text": "a dog on a beach"}`: words, encoded as the training captions were (text→image).
///
/// - `{"image_path": "/photos/a.jpg"}`: a picture on the server's disk, encoded by the image
///   encoder the index records (image→text); `POST /search/image` takes the picture itself.
///
/// `"exact": true` scores every gallery row even when the server searches its HNSW graphs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    #[serde(default)]
    pub id: Option<usize>,
    #[serde(default)]
    pub features: Option<Vec<f32>>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub image_path: Option<std::path::PathBuf>,
    #[serde(default)]
    pub direction: Option<Direction>,
    #[serde(default = "default_k")]
    pub k: usize,
    #[serde(default)]
    pub exact: bool,
}

impl SearchRequest {
    /// What is searched for, for the access log's `--log-queries`.
    pub fn describe(&self) -> String {
        if let Some(text) = &self.text {
            format!("text {text:?}")
        } else if let Some(path) = &self.image_path {
            format!("image_path {:?}", path.display().to_string())
        } else if let Some(features) = &self.features {
            format!("features ({} values)", features.len())
        } else {
            self.id
                .map_or("nothing".to_string(), |id| format!("id {id}"))
        }
    }
}

pub fn default_k() -> usize {
    10
}

/// The query string of `/search/image`: `?k=10&exact=true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageParams {
    #[serde(default = "default_k")]
    pub k: usize,
    #[serde(default)]
    pub exact: bool,
}

/// The body of `POST /admin/reload`: another index folder, or none for the same one again.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    #[serde(default)]
    pub index: Option<std::path::PathBuf>,
}

/// A `POST /search` body.
///
/// # Errors
/// What is wrong with it, for a 400.
pub fn parse_search(body: &[u8]) -> Result<SearchRequest, String> {
    serde_json::from_slice(body).map_err(|e| format!("the body is not a search request: {e}"))
}

/// The query string of `POST /search/image` (none: the defaults).
///
/// # Errors
/// What is wrong with it, for a 400.
pub fn parse_image_query(query: Option<&str>) -> Result<ImageParams, String> {
    serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| format!("the query string is not `k=N&exact=BOOL`: {e}"))
}

/// A `POST /admin/reload` body (empty: reload the served folder).
///
/// # Errors
/// What is wrong with it, for a 400.
pub fn parse_reload(body: &[u8]) -> Result<ReloadRequest, String> {
    if body.is_empty() {
        return Ok(ReloadRequest::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        format!("the body is not a reload request ({{\"index\": FOLDER}} or none): {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_requests_parse_and_bad_ones_say_what_is_wrong() {
        let r = parse_search(br#"{"id": 3, "direction": "image_to_text", "k": 4}"#).unwrap();
        assert_eq!(
            (r.id, r.direction, r.k),
            (Some(3), Some(Direction::ImageToText), 4)
        );
        assert_eq!(
            parse_search(br#"{"text": "a dog"}"#).unwrap().k,
            default_k()
        );
        for bad in [&b"{"[..], br#"{"id": -1}"#, br#"{"idd": 1}"#, b"\xff"] {
            let e = parse_search(bad).unwrap_err();
            assert!(e.starts_with("the body is not a search request"), "{e}");
        }
        let p = parse_image_query(Some("k=5&exact=true")).unwrap();
        assert_eq!((p.k, p.exact), (5, true));
        assert_eq!(parse_image_query(None).unwrap().k, default_k());
        for bad in ["k=x", "k=1&kk=2", "exact=maybe"] {
            let e = parse_image_query(Some(bad)).unwrap_err();
            assert!(e.contains("k=N&exact=BOOL"), "{bad}: {e}");
        }
        assert!(parse_reload(b"").unwrap().index.is_none());
        assert_eq!(
            parse_reload(br#"{"index": "/x"}"#).unwrap().index,
            Some(std::path::PathBuf::from("/x"))
        );
        assert!(
            parse_reload(b"{\"folder\": 1}")
                .unwrap_err()
                .contains("reload request")
        );
    }
}
