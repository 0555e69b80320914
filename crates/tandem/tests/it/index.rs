//! The search index: built from a checkpoint and a dataset, saved, reopened, and searched
//! exactly — against brute force over the stored embeddings.

use candle_core::Device;
use tandem::config::Config;
use tandem::data::{LatentRows, Matrix, PairedDataset};
use tandem::index::{Direction, Hit, HnswParams, Index, SearchMode};
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
        }
        .into(),
        texts: Matrix {
            rows: 2 * n,
            cols: 4,
            data: texts,
        }
        .into(),
        text_to_image: (0..2 * n as u32).map(|t| t / 2).collect(),
        captions: Some((0..2 * n).map(|t| format!("caption {t}")).collect()),
        splits: None,
    }
}

/// A random 6/4 → 8 → `dim` model and its checkpoint, saved in a fresh folder.
fn saved_random_model(dim: usize) -> (TwoBranch, Config, tempfile::TempDir, std::path::PathBuf) {
    let mut config = Config::default();
    config.model.hidden = vec![8];
    config.model.dim = dim;
    let model = TwoBranch::new(6, 4, &config.model, 3, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let checkpoint_path = dir.path().join("best.safetensors");
    save_checkpoint(&checkpoint_path, &model, &config, 1, &[], &[]).unwrap();
    (model, config, dir, checkpoint_path)
}

#[test]
fn saved_index_searches_exactly_like_brute_force() {
    let (model, config, dir, checkpoint_path) = saved_random_model(5);
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
            let hits = &index
                .search(&query, direction, 7, SearchMode::Exact)
                .unwrap()[0];
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

/// An index over synthetic embeddings (3000 images, 6000 captions, 32-d, 6-d latent) with a
/// random model of the same width.
fn synthetic_index() -> (Index, tempfile::TempDir, std::path::PathBuf) {
    let (model, _, dir, checkpoint_path) = saved_random_model(32);
    let rows = LatentRows {
        dim: 32,
        latent: 6,
        noise: 0.1,
        basis_seed: 3,
    };
    let images = rows.draw(3000, 1);
    let texts = rows.draw(6000, 2);
    let text_to_image = (0..6000u32).map(|t| t / 2).collect();
    (
        Index::from_embeddings(images, texts, text_to_image, None, model),
        dir,
        checkpoint_path,
    )
}

#[test]
fn hnsw_index_finds_the_exact_neighbours_and_survives_a_round_trip() {
    let (mut index, dir, checkpoint_path) = synthetic_index();
    let e = index
        .build_approximate(
            HnswParams {
                connections: 1,
                ..HnswParams::default()
            },
            |_, _| {},
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("connections = 1"), "{e}");
    assert_eq!(index.default_mode(), SearchMode::Exact);
    let mut last = (0, 0);
    index
        .build_approximate(HnswParams::default(), |done, total| last = (done, total))
        .unwrap();
    assert_eq!(last, (9000, 9000));
    let recall = index.approximate.as_ref().unwrap().recall;
    for (r, rows) in recall.iter().zip([3000, 6000]) {
        assert_eq!((r.rows, r.queries, r.ef), (rows, 1000, 100));
        assert!(r.recall_at_10 >= 0.95, "{r:?}");
    }

    // Measured here too, independently of the build's own report: text→image and back.
    let exact = |i: &Index, d: Direction, q: usize| -> Vec<u32> {
        let query = i.embedding_of(d, q).unwrap();
        let hits = &i.search(&query, d, 10, SearchMode::Exact).unwrap()[0];
        hits.iter().map(|h| h.id).collect()
    };
    let approximate = |i: &Index, d: Direction, q: usize| -> Vec<Hit> {
        let query = i.embedding_of(d, q).unwrap();
        i.search(&query, d, 10, i.default_mode()).unwrap().remove(0)
    };
    let mut found = 0;
    for q in (0..6000).step_by(37) {
        let truth = exact(&index, Direction::TextToImage, q);
        let hits = approximate(&index, Direction::TextToImage, q);
        assert_eq!(hits.len(), 10);
        // Best first, each score the exact inner product, ranks 1..=10.
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(hits.iter().enumerate().all(|(i, h)| h.rank == i + 1));
        found += hits.iter().filter(|h| truth.contains(&h.id)).count();
    }
    let queries = (0..6000).step_by(37).count();
    assert!(found as f64 / (10 * queries) as f64 >= 0.95, "{found}");

    let index_dir = dir.path().join("index");
    index.save(&index_dir, &checkpoint_path).unwrap();
    let reopened = Index::open(&index_dir).unwrap();
    let again = reopened.approximate.as_ref().unwrap();
    assert_eq!(again.params, HnswParams::default());
    assert_eq!(again.recall, recall);
    for (d, q) in [(Direction::TextToImage, 5), (Direction::ImageToText, 17)] {
        assert_eq!(approximate(&reopened, d, q), approximate(&index, d, q));
    }
    // Approximate search of an index without graphs is refused; saving one without graphs
    // over the folder drops the old graphs' record.
    index.approximate = None;
    let query = index.embedding_of(Direction::TextToImage, 0).unwrap();
    let e = index
        .search(
            &query,
            Direction::TextToImage,
            3,
            SearchMode::Approximate { ef: 10 },
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("no HNSW graph"), "{e}");
    index.save(&index_dir, &checkpoint_path).unwrap();
    assert!(Index::open(&index_dir).unwrap().approximate.is_none());

    // A truncated graph file is named in the error.
    index
        .build_approximate(HnswParams::default(), |_, _| {})
        .unwrap();
    index.save(&index_dir, &checkpoint_path).unwrap();
    let graph = index_dir.join("images.hnsw.safetensors");
    let bytes = std::fs::read(&graph).unwrap();
    std::fs::write(&graph, &bytes[..bytes.len() / 2]).unwrap();
    let e = Index::open(&index_dir).err().unwrap().to_string();
    assert!(
        e.contains("images.hnsw.safetensors") && e.contains("rebuild"),
        "{e}"
    );

    // An index whose graphs an earlier tandem wrote with hnsw_rs is refused with what to do.
    let record_path = index_dir.join("hnsw.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    let old_files = serde_json::json!({"graph_sha256": "00", "data_sha256": "00"});
    record["image_files"] = old_files.clone();
    record["caption_files"] = old_files;
    std::fs::write(&record_path, record.to_string()).unwrap();
    let e = Index::open(&index_dir).err().unwrap().to_string();
    assert!(e.contains("earlier tandem") && e.contains("--hnsw"), "{e}");
}
