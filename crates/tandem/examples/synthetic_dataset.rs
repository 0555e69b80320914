//! A dataset folder of paper-size synthetic features, for measuring training time and memory
//! at the scale the recipe was made for (the peak-RSS figure of docs/performance.md):
//!
//! `cargo run --release -p tandem --example synthetic_dataset -- OUT N_IMAGES [CAPTIONS_PER_IMAGE]`
//!
//! `N_IMAGES` rows of 4096 image features (VGG's width) and 5 (or `CAPTIONS_PER_IMAGE`)
//! caption rows of 6000 (the paper's Fisher-vector width) per image, drawn by [`LatentRows`]
//! (unit rows with a 32-d latent; captions of one image share nothing with it: the data are
//! for timing, not for learning), written as `images.npy`, `texts.npy` and
//! `text_to_image.npy`. Flickr30K's size is 31783 images.

use std::path::Path;
use std::time::Instant;

use tandem::data::{LatentRows, npy};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, n, per_image) = match &args[..] {
        [out, n] => (out, n, "5"),
        [out, n, per] => (out, n, per.as_str()),
        _ => panic!("usage: synthetic_dataset OUT N_IMAGES [CAPTIONS_PER_IMAGE]"),
    };
    let out = Path::new(out);
    let n: usize = n.parse().expect("N_IMAGES is a number");
    let per_image: usize = per_image.parse().expect("CAPTIONS_PER_IMAGE is a number");
    std::fs::create_dir_all(out).expect("create the output folder");
    let started = Instant::now();
    let rows = |dim: usize, basis_seed: u64| LatentRows {
        dim,
        basis_seed,
        ..LatentRows::default()
    };
    let images = rows(4096, 1).draw(n, 1);
    npy::write_f32(&out.join("images.npy"), n, 4096, &images).expect("write images.npy");
    drop(images);
    let captions = n * per_image;
    let texts = rows(6000, 2).draw(captions, 2);
    npy::write_f32(&out.join("texts.npy"), captions, 6000, &texts).expect("write texts.npy");
    drop(texts);
    let owner: Vec<i64> = (0..captions as i64).map(|c| c / per_image as i64).collect();
    std::fs::write(out.join("text_to_image.npy"), npy::encode_i64(&owner))
        .expect("write text_to_image.npy");
    println!(
        "{n} images × 4096 and {captions} captions × 6000 in {} ({:.1} s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
}
