//! A TF-IDF featuriser that needs no pretrained model: word n-grams and character n-grams
//! inside word boundaries (sklearn's `char_wb`), sublinear term frequency, smoothed inverse
//! document frequency, rows L2-normalised. The vocabulary is fitted once on the training
//! captions and saved, so queries are featurised with the same columns.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// A fitted vocabulary: one column per term.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TfIdf {
    /// Word n-gram lengths, first to last (`[0, 0]`: none).
    pub word_ngrams: [usize; 2],
    /// Character n-gram lengths inside ` word ` (`[0, 0]`: none).
    pub char_ngrams: [usize; 2],
    /// Column terms: `w:<words>` and `c:<characters>`.
    pub terms: Vec<String>,
    /// Per column: ln((1 + documents) / (1 + document frequency)) + 1.
    pub idf: Vec<f32>,
}

impl TfIdf {
    /// Word 1–2-grams and character 3–5-grams, the usual choice for short captions.
    pub const DEFAULT_WORD_NGRAMS: [usize; 2] = [1, 2];
    /// See [`TfIdf::DEFAULT_WORD_NGRAMS`].
    pub const DEFAULT_CHAR_NGRAMS: [usize; 2] = [3, 5];

    /// Fits the vocabulary on `texts`: the `max_features` terms found in most texts (ties by
    /// term), at least two texts each when that leaves any.
    pub fn fit(
        texts: &[String],
        word_ngrams: [usize; 2],
        char_ngrams: [usize; 2],
        max_features: usize,
    ) -> Self {
        let mut document_frequency: HashMap<String, usize> = HashMap::new();
        for text in texts {
            let mut terms = analyze(text, word_ngrams, char_ngrams);
            terms.sort_unstable();
            terms.dedup();
            for term in terms {
                *document_frequency.entry(term).or_default() += 1;
            }
        }
        let min_df = if document_frequency.values().any(|&df| df >= 2) {
            2
        } else {
            1
        };
        let mut ranked: Vec<(String, usize)> = document_frequency
            .into_iter()
            .filter(|&(_, df)| df >= min_df)
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(max_features);
        let n = texts.len() as f64;
        let idf = ranked
            .iter()
            .map(|(_, df)| (((1.0 + n) / (1.0 + *df as f64)).ln() + 1.0) as f32)
            .collect();
        TfIdf {
            word_ngrams,
            char_ngrams,
            terms: ranked.into_iter().map(|(t, _)| t).collect(),
            idf,
        }
    }

    /// Number of columns.
    pub fn dim(&self) -> usize {
        self.terms.len()
    }

    /// Features of `texts`: (1 + ln count) · idf per known term, each row L2-normalised; a text
    /// with no known term is a row of zeros.
    ///
    /// # Shapes
    /// Returns `[texts.len() * dim]`, row-major.
    pub fn transform(&self, texts: &[String]) -> Vec<f32> {
        let column: HashMap<&str, usize> = self
            .terms
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        let dim = self.dim();
        let mut out = vec![0f32; texts.len() * dim];
        for (row, text) in out.chunks_exact_mut(dim.max(1)).zip(texts) {
            let mut counts: HashMap<usize, u32> = HashMap::new();
            for term in analyze(text, self.word_ngrams, self.char_ngrams) {
                if let Some(&c) = column.get(term.as_str()) {
                    *counts.entry(c).or_default() += 1;
                }
            }
            for (&c, &n) in &counts {
                row[c] = (1.0 + f64::from(n).ln()) as f32 * self.idf[c];
            }
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v /= norm);
            }
        }
        out
    }
}

/// The terms of one text, with repeats: lowercased words are maximal runs of letters and
/// digits.
fn analyze(text: &str, word_ngrams: [usize; 2], char_ngrams: [usize; 2]) -> Vec<String> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let mut terms = Vec::new();
    for n in word_ngrams[0].max(1)..=word_ngrams[1] {
        for gram in words.windows(n) {
            terms.push(format!("w:{}", gram.join(" ")));
        }
    }
    for word in &words {
        let padded: Vec<char> = std::iter::once(' ')
            .chain(word.chars())
            .chain(std::iter::once(' '))
            .collect();
        for n in char_ngrams[0].max(1)..=char_ngrams[1] {
            if n > padded.len() {
                break;
            }
            for gram in padded.windows(n) {
                terms.push(format!("c:{}", gram.iter().collect::<String>()));
            }
        }
    }
    terms
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hand_computed_word_unigrams() {
        // Three texts; "dog" is in two, "a" in two, "cat" in one.
        let texts = strings(&["a dog", "A dog dog", "cat"]);
        let t = TfIdf::fit(&texts, [1, 1], [0, 0], 10);
        // min_df 2 keeps "a" and "dog" (ties by term).
        assert_eq!(t.terms, vec!["w:a", "w:dog"]);
        let idf = ((4.0f64 / 3.0).ln() + 1.0) as f32;
        assert_eq!(t.idf, vec![idf, idf]);
        let x = t.transform(&strings(&["dog dog a", "cat", "Dog!"]));
        // "dog dog a": dog (1 + ln 2)·idf, a 1·idf, normalised.
        let (a, d) = (1.0f32, 1.0 + 2f32.ln());
        let norm = (a * a + d * d).sqrt();
        assert!((x[0] - a / norm).abs() < 1e-6 && (x[1] - d / norm).abs() < 1e-6);
        // No known term: zeros. Punctuation and case do not matter.
        assert_eq!(&x[2..4], &[0.0, 0.0]);
        assert_eq!(&x[4..6], &[0.0, 1.0]);
    }

    #[test]
    fn character_ngrams_stay_inside_words() {
        let terms = analyze("ab c", [0, 0], [3, 3]);
        assert_eq!(terms, vec!["c: ab", "c:ab ", "c: c "]);
    }

    proptest! {
        #[test]
        fn rows_are_unit_or_zero_and_the_fit_round_trips(
            texts in proptest::collection::vec("[a-d ]{0,12}", 1..12),
            max_features in 1usize..40,
        ) {
            let t = TfIdf::fit(&texts, TfIdf::DEFAULT_WORD_NGRAMS, TfIdf::DEFAULT_CHAR_NGRAMS, max_features);
            prop_assert!(t.dim() <= max_features);
            let x = t.transform(&texts);
            for row in x.chunks(t.dim().max(1)) {
                let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                prop_assert!(norm == 0.0 || (norm - 1.0).abs() < 1e-5);
            }
            let back: TfIdf = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
            prop_assert_eq!(&back, &t);
            prop_assert_eq!(back.transform(&texts), x);
        }
    }
}
