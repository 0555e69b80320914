//! Evaluation: metric invariants against brute force, the COCO 1K protocol against five
//! separate 1K evaluations, and snapshots of every report format.

use candle_core::Device;
use proptest::prelude::*;
use tandem::config::ModelConfig;
use tandem::data::{Matrix, PairedDataset};
use tandem::eval::{
    Protocol, Ranks, RetrievalMetrics, dot, ranks_from_embeddings, ranks_from_scores,
};
use tandem::model::TwoBranch;
use tandem::train::evaluate_protocol;

/// Scores of every caption against every image, from row-major embeddings, with the
/// ranking's score function.
fn scores(images: &[f32], texts: &[f32], dim: usize) -> Vec<Vec<f32>> {
    texts
        .chunks_exact(dim)
        .map(|t| images.chunks_exact(dim).map(|i| dot(t, i)).collect())
        .collect()
}

/// Random embeddings (continuous, so ties have probability 0) with 1..=4 captions per image.
fn case() -> impl Strategy<Value = (Vec<f32>, Vec<f32>, Vec<u32>)> {
    (2usize..10, proptest::collection::vec(1u32..5, 10)).prop_flat_map(|(n, counts)| {
        let text_image: Vec<u32> = (0..n as u32)
            .flat_map(|i| std::iter::repeat_n(i, counts[i as usize] as usize))
            .collect();
        let m = text_image.len();
        (
            proptest::collection::vec(-1.0f32..1.0, n * 3),
            proptest::collection::vec(-1.0f32..1.0, m * 3),
            Just(text_image),
        )
    })
}

proptest! {
    /// Reordering the gallery (images, and captions with them) changes no metric.
    #[test]
    fn shuffling_the_gallery_changes_no_metric((images, texts, text_image) in case(), seed in any::<u64>()) {
        let n = images.len() / 3;
        let before = RetrievalMetrics::from_ranks(
            "t",
            &ranks_from_embeddings(&images, &texts, 3, &text_image),
        );
        // A permutation of the images from the seed, and of the captions.
        let mut order: Vec<usize> = (0..n).collect();
        let mut state = seed | 1;
        for k in (1..n).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            order.swap(k, (state % (k as u64 + 1)) as usize);
        }
        let mut new_index = vec![0u32; n];
        for (new, &old) in order.iter().enumerate() {
            new_index[old] = new as u32;
        }
        let shuffled_images: Vec<f32> = order.iter().flat_map(|&o| images[o * 3..o * 3 + 3].to_vec()).collect();
        let m = text_image.len();
        let caption_order: Vec<usize> = (0..m).rev().collect();
        let shuffled_texts: Vec<f32> = caption_order.iter().flat_map(|&t| texts[t * 3..t * 3 + 3].to_vec()).collect();
        let shuffled_ids: Vec<u32> = caption_order.iter().map(|&t| new_index[text_image[t] as usize]).collect();
        let after = RetrievalMetrics::from_ranks(
            "t",
            &ranks_from_embeddings(&shuffled_images, &shuffled_texts, 3, &shuffled_ids),
        );
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        prop_assert!(close(before.rsum, after.rsum));
        prop_assert!(close(before.image_to_text_map_at_r, after.image_to_text_map_at_r));
        prop_assert!(close(before.image_to_text_ndcg_at_10, after.image_to_text_ndcg_at_10));
        prop_assert!(close(before.text_to_image_meanr, after.text_to_image_meanr));
        prop_assert!(close(before.image_to_text_meanr, after.image_to_text_meanr));
    }

    /// Recall never drops as K grows, in either direction, and every rank of every caption
    /// equals the brute-force sort.
    #[test]
    fn recall_is_monotone_in_k_and_ranks_match_brute_force((images, texts, text_image) in case()) {
        let n = images.len() / 3;
        let ranks = ranks_from_embeddings(&images, &texts, 3, &text_image);
        prop_assert_eq!(&ranks, &ranks_from_scores(&scores(&images, &texts, 3), &text_image, n));
        let ks: Vec<usize> = (1..=text_image.len() + 1).collect();
        let m = RetrievalMetrics::from_ranks_at("t", &ranks, &ks);
        for pair in m.recall_at.windows(2) {
            prop_assert!(pair[0].image_to_text <= pair[1].image_to_text);
            prop_assert!(pair[0].text_to_image <= pair[1].text_to_image);
        }
        let last = m.recall_at.last().unwrap();
        prop_assert_eq!((last.image_to_text, last.text_to_image), (100.0, 100.0));
        prop_assert!((0.0..=100.0).contains(&m.image_to_text_map_at_r));
        prop_assert!((0.0..=100.0).contains(&m.image_to_text_ndcg_at_10));
    }
}

/// A dataset of `n` images with 5 captions each (caption = noisy copy of part of its image).
fn synthetic(n: usize) -> PairedDataset {
    let mut state = 7u64;
    let mut rand = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let images: Vec<f32> = (0..n * 6).map(|_| rand()).collect();
    let mut texts = Vec::new();
    let mut text_to_image = Vec::new();
    for i in 0..n {
        for _ in 0..5 {
            texts.extend((0..4).map(|k| images[i * 6 + k] + 0.3 * rand()));
            text_to_image.push(i as u32);
        }
    }
    PairedDataset {
        root: "synthetic".into(),
        images: Matrix {
            rows: n,
            cols: 6,
            data: images,
        }
        .into(),
        texts: Matrix {
            rows: n * 5,
            cols: 4,
            data: texts,
        }
        .into(),
        text_to_image,
        captions: None,
        splits: None,
    }
}

#[test]
fn coco_1k_is_the_mean_of_five_separate_1k_evaluations() {
    let dataset = synthetic(5000);
    let config = ModelConfig {
        hidden: vec![],
        dim: 4,
        ..ModelConfig::default()
    };
    let mut model = TwoBranch::new(6, 4, &config, 1, &Device::Cpu).unwrap();
    let split: Vec<u32> = (0..5000).collect();
    let coco_1k = evaluate_protocol(
        &mut model,
        &dataset,
        &split,
        "test",
        Protocol::Coco1k,
        &[50],
        2048,
    )
    .unwrap();
    let folds: Vec<RetrievalMetrics> = split
        .chunks(1000)
        .map(|fold| {
            evaluate_protocol(
                &mut model,
                &dataset,
                fold,
                "test",
                Protocol::Full,
                &[50],
                2048,
            )
            .unwrap()
        })
        .collect();
    let mean = |f: &dyn Fn(&RetrievalMetrics) -> f64| folds.iter().map(f).sum::<f64>() / 5.0;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert_eq!(
        (coco_1k.folds, coco_1k.images, coco_1k.texts),
        (5, 1000, 5000)
    );
    assert!(close(coco_1k.rsum, mean(&|m| m.rsum)));
    for k in 0..3 {
        assert!(close(
            coco_1k.image_to_text[k],
            mean(&|m| m.image_to_text[k])
        ));
        assert!(close(
            coco_1k.text_to_image[k],
            mean(&|m| m.text_to_image[k])
        ));
    }
    assert!(close(
        coco_1k.image_to_text_map_at_r,
        mean(&|m| m.image_to_text_map_at_r)
    ));
    assert!(close(
        coco_1k.recall_at[0].text_to_image,
        mean(&|m| m.recall_at[0].text_to_image)
    ));
    // 5K ranks all 5000 images at once: harder than any 1K fold.
    let coco_5k = evaluate_protocol(
        &mut model,
        &dataset,
        &split,
        "test",
        Protocol::Coco5k,
        &[],
        2048,
    )
    .unwrap();
    assert!(
        coco_5k.rsum < coco_1k.rsum,
        "{} vs {}",
        coco_5k.rsum,
        coco_1k.rsum
    );
    let e = evaluate_protocol(
        &mut model,
        &dataset,
        &split[..900],
        "test",
        Protocol::Flickr1k,
        &[],
        2048,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("flickr-1k needs 1000"), "{e}");
}

/// Fixed ranks: 3 images with 2, 1 and 2 captions.
fn fixed() -> RetrievalMetrics {
    let ranks = Ranks {
        image_to_text: vec![1, 4, 2],
        image_to_text_all: vec![vec![1, 3], vec![4], vec![2, 5]],
        text_to_image: vec![1, 2, 1, 3, 1],
    };
    RetrievalMetrics::from_ranks_at("test", &ranks, &[2, 20])
}

#[test]
fn report_formats() {
    let m = fixed();
    insta::assert_snapshot!("table", m.table());
    insta::assert_snapshot!("csv", m.csv());
    insta::assert_snapshot!("json", serde_json::to_string_pretty(&m).unwrap());
    let back: RetrievalMetrics = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(back, m);
}
