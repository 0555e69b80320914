//! The search index: built from a checkpoint and a dataset, saved, reopened, and searched
//! exactly — against brute force over the stored embeddings.

use candle_core::Device;
use tandem::config::Config;
use tandem::data::{Matrix, PairedDataset};
use tandem::index::{Direction, Index};
use tandem::model::{Checkpoint, TwoBranch, save_checkpoint};

fn dataset() -> PairedDataset {
    let mut state = 11u64;
    let mut rand = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let n = 40;
    let images: Vec<f32> = (0..n * 6).map(|_| rand()).collect();
    let texts: Vec<f32> = (0..n * 2 * 4).map(|_| rand()).collect();
    PairedDataset {
        root: "synthetic".into(),
        images: Matrix {
            rows: n,
            cols: 6,
            data: images,
        },
        texts: Matrix {
            rows: 2 * n,
            cols: 4,
            data: texts,
        },
        text_to_image: (0..2 * n as u32).map(|t| t / 2).collect(),
        captions: Some((0..2 * n).map(|t| format!("caption {t}")).collect()),
        splits: None,
    }
}

#[test]
fn saved_index_searches_exactly_like_brute_force() {
    let mut config = Config::default();
    config.model.hidden = vec![8];
    config.model.dim = 5;
    let model = TwoBranch::new(6, 4, &config.model, 3, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let checkpoint_path = dir.path().join("best.safetensors");
    save_checkpoint(&checkpoint_path, &model, &config, 1, &[], &[]).unwrap();
    let checkpoint = Checkpoint {
        model,
        config,
        epoch: 1,
        extra: Default::default(),
        metadata: Default::default(),
    };
    let data = dataset();
    let built = Index::build(&checkpoint, &data).unwrap();
    let index_dir = dir.path().join("index");
    built.save(&index_dir, &checkpoint_path).unwrap();
    let index = Index::open(&index_dir).unwrap();
    assert_eq!(index.images, built.images);
    assert_eq!(index.texts, built.texts);
    assert_eq!(index.text_to_image, data.text_to_image);
    assert_eq!(index.captions, data.captions);

    for (direction, n_queries, n_gallery) in [
        (Direction::TextToImage, index.n_texts(), index.n_images()),
        (Direction::ImageToText, index.n_images(), index.n_texts()),
    ] {
        for q in 0..n_queries {
            let query = index.embedding_of(direction, q).unwrap();
            let hits = &index.search(&query, direction, 7).unwrap()[0];
            let gallery = match direction {
                Direction::TextToImage => &index.images,
                Direction::ImageToText => &index.texts,
            };
            let score = |g: usize| -> f32 {
                let row = &gallery[g * index.dim..(g + 1) * index.dim];
                row.iter().zip(&query).map(|(a, b)| a * b).sum()
            };
            let mut order: Vec<usize> = (0..n_gallery).collect();
            order.sort_by(|&a, &b| score(b).partial_cmp(&score(a)).unwrap().then(a.cmp(&b)));
            let ids: Vec<usize> = hits.iter().map(|h| h.id as usize).collect();
            assert_eq!(ids, order[..7].to_vec(), "{direction:?} query {q}");
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
            if direction == Direction::ImageToText {
                let h = &hits[0];
                assert_eq!(h.image, Some(data.text_to_image[h.id as usize]));
                assert_eq!(
                    h.text.as_deref(),
                    Some(format!("caption {}", h.id).as_str())
                );
            }
        }
    }
    let e = index
        .embedding_of(Direction::ImageToText, 40)
        .unwrap_err()
        .to_string();
    assert!(e.contains("image 40 is out of range"), "{e}");
    let e = Index::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("tandem index build"), "{e}");
}
