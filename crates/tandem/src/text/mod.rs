//! Caption text → text features, offline: a pretrained BERT-family sentence encoder
//! ([`SentenceEncoder`], all-MiniLM-L6-v2 first) run with candle, or a TF-IDF featuriser that
//! needs no pretrained model ([`TfIdf`]). [`TextEncoderRecord`] says which one produced a
//! dataset's text features, so a trained run can encode new queries the same way and refuse a
//! different encoder.

mod bert;
mod gelu;
mod record;
mod sentence;
mod tfidf;

pub use record::{TEXT_ENCODER_FILE, TextEncoderRecord};
pub use sentence::SentenceEncoder;
pub use tfidf::TfIdf;
