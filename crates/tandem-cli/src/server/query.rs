//! `POST /search`: what a request may ask and how it is answered.

use std::sync::Mutex;

use serde::Serialize;
use tandem::index::{Direction, Hit};
use tandem::model::TwoBranch;
use tandem::text::{SentenceEncoder, TfIdf};

use super::Served;
pub use super::request::SearchRequest;

/// Results per query at most.
pub const MAX_K: usize = 1000;

#[derive(Serialize)]
pub struct Answer {
    direction: Direction,
    results: Vec<Hit>,
}

/// A request that cannot be answered: its reason and its status (400 for the request's fault,
/// 502 when the database behind the server failed).
pub struct Rejected(pub String, pub axum::http::StatusCode);

impl Rejected {
    /// The request's fault: 400.
    pub fn bad(message: impl Into<String>) -> Self {
        Rejected(message.into(), axum::http::StatusCode::BAD_REQUEST)
    }

    /// A failure of the galleries' backend: 502 when it is a database, else 400 as before.
    fn backend(state: &Served, message: String) -> Self {
        match state.backend {
            super::backend::Backend::Postgres { .. } => {
                Rejected(message, axum::http::StatusCode::BAD_GATEWAY)
            }
            super::backend::Backend::Embedded { .. } => Rejected::bad(message),
        }
    }
}

/// How words become text features for this index.
pub enum QueryText {
    Sentence(Box<SentenceEncoder>),
    Tfidf(TfIdf),
}

impl QueryText {
    pub fn describe(&self) -> String {
        match self {
            QueryText::Sentence(e) => e.record().describe(),
            QueryText::Tfidf(t) => format!("TF-IDF with {} terms", t.dim()),
        }
    }

    /// Text features of `texts`, one row each.
    ///
    /// # Errors
    /// A tokenizer or tensor error of the sentence encoder.
    pub fn encode_all(&self, texts: &[String]) -> tandem::Result<Vec<f32>> {
        match self {
            QueryText::Sentence(e) => e.encode(texts, 64, |_| {}),
            QueryText::Tfidf(t) => Ok(t.transform(texts)),
        }
    }

    fn encode(&self, text: &str) -> Result<Vec<f32>, Rejected> {
        self.encode_all(&[text.to_string()])
            .map_err(|e| Rejected::bad(format!("encoding the text failed: {e}")))
    }
}

/// The model, behind a lock: embedding a feature query uses its branches.
pub struct Embedder(pub Mutex<TwoBranch>);

/// A picture query: a file on the server's disk or uploaded bytes.
pub enum Picture {
    Path(std::path::PathBuf),
    Upload(Vec<u8>),
}

fn check_k(k: usize) -> Result<(), Rejected> {
    if k == 0 || k > MAX_K {
        return Err(Rejected::bad(format!(
            "k is {k}; it must be between 1 and {MAX_K}"
        )));
    }
    Ok(())
}

/// Encodes a picture with the index's image encoder and searches its captions.
pub fn run_picture(
    state: &Served,
    picture: Picture,
    k: usize,
    exact: bool,
) -> Result<Answer, Rejected> {
    check_k(k)?;
    let Some(encoder) = &state.pictures else {
        return Err(Rejected::bad(
            "this index does not record which encoder made its image features, so it cannot encode pictures; query by `id` or `features`".to_string(),
        ));
    };
    let decoded = match picture {
        Picture::Path(path) => tandem::image::read_rgb8(&path),
        Picture::Upload(bytes) => {
            tandem::image::decode_rgb8(std::path::Path::new("the uploaded picture"), bytes)
        }
    }
    .map_err(|e| Rejected::bad(e.to_string().lines().next().unwrap_or_default().to_string()))?;
    let features = encoder
        .encode(std::slice::from_ref(&decoded))
        .map_err(|e| Rejected::bad(format!("encoding the picture failed: {e}")))?;
    let query = embed(state, features.into_iter().flatten().collect(), true)?;
    search_one(state, query, Direction::ImageToText, k, exact)
}

pub fn run(state: &Served, request: SearchRequest) -> Result<Answer, Rejected> {
    check_k(request.k)?;
    let backend = &state.backend;
    let asked = [
        request.id.is_some(),
        request.features.is_some(),
        request.text.is_some(),
        request.image_path.is_some(),
    ];
    if asked.iter().filter(|&&a| a).count() != 1 {
        return Err(Rejected::bad(
            "give exactly one of `id`, `features`, `text` or `image_path`".to_string(),
        ));
    }
    if let Some(path) = request.image_path {
        if request.direction == Some(Direction::TextToImage) {
            return Err(Rejected::bad(
                "an `image_path` query searches captions: direction must be image_to_text"
                    .to_string(),
            ));
        }
        return run_picture(state, Picture::Path(path), request.k, request.exact);
    }
    let (direction, query) = if let Some(text) = &request.text {
        if request.direction == Some(Direction::ImageToText) {
            return Err(Rejected::bad(
                "a `text` query searches images: direction must be text_to_image".to_string(),
            ));
        }
        let Some(encoder) = &state.text else {
            return Err(Rejected::bad(
                "this index does not record which encoder made its text features, so it cannot encode words; query by `id` or `features`".to_string(),
            ));
        };
        let features = encoder.encode(text)?;
        (Direction::TextToImage, embed(state, features, false)?)
    } else {
        let Some(direction) = request.direction else {
            return Err(Rejected::bad(
                "`direction` is required with `id` and `features`: text_to_image or image_to_text"
                    .to_string(),
            ));
        };
        if let Some(id) = request.id {
            let (images, captions) = backend.counts();
            let (count, what) = match direction {
                Direction::TextToImage => (captions, "caption"),
                Direction::ImageToText => (images, "image"),
            };
            if id >= count {
                return Err(Rejected::bad(format!(
                    "{what} {id} is out of range: the index has {count} {what}s (0..{})",
                    count.saturating_sub(1)
                )));
            }
            let query = backend
                .embedding_of(direction, id)
                .map_err(|e| Rejected::backend(state, format!("{e:#}")))?;
            (direction, query)
        } else {
            let features = request.features.expect("one of the three");
            if let Some(bad) = features.iter().position(|v| !v.is_finite()) {
                return Err(Rejected::bad(format!(
                    "features[{bad}] is not a finite number"
                )));
            }
            (
                direction,
                embed(state, features, direction == Direction::ImageToText)?,
            )
        }
    };
    search_one(state, query, direction, request.k, request.exact)
}

/// One embedded query against the gallery of `direction`.
fn search_one(
    state: &Served,
    query: Vec<f32>,
    direction: Direction,
    k: usize,
    exact: bool,
) -> Result<Answer, Rejected> {
    let results = state
        .backend
        .search(query, direction, k, exact)
        .map_err(|e| Rejected::backend(state, format!("search failed: {e:#}")))?;
    Ok(Answer { direction, results })
}

/// Raw features of one query → its embedding, by the image or the text branch.
fn embed(state: &Served, features: Vec<f32>, image_side: bool) -> Result<Vec<f32>, Rejected> {
    let mut model = state.embedder.0.lock().unwrap_or_else(|p| p.into_inner());
    let expected = if image_side {
        model.d_image
    } else {
        model.d_text
    };
    if features.len() != expected {
        return Err(Rejected::bad(format!(
            "{} values in `features`; the model's {} branch takes {expected}",
            features.len(),
            if image_side { "image" } else { "text" }
        )));
    }
    model
        .embed_rows(&features, expected, image_side, 1)
        .map_err(|e| Rejected::bad(format!("embedding the features failed: {e}")))
}
