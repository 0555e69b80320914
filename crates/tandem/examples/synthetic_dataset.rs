//! A dataset folder of paper-size synthetic features, for measuring training time and memory
//! at the scale the recipe was made for (the peak-RSS figures of docs/performance.md):
//!
//! `cargo run --release -p tandem --example synthetic_dataset -- OUT N_IMAGES [CAPTIONS_PER_IMAGE [PIECES]]`
//!
//! `N_IMAGES` rows of 4096 image features (VGG's width) and 5 (or `CAPTIONS_PER_IMAGE`)
//! caption rows of 6000 (the paper's Fisher-vector width) per image, drawn by [`LatentRows`]
//! (unit rows with a 32-d latent; captions of one image share nothing with it: the data are
//! for timing, not for learning), written as `images.npy`, `texts.npy` and
//! `text_to_image.npy`. Flickr30K's size is 31783 images.
//!
//! With `PIECES`, the set is drawn and written piece by piece (`images-00000.npy`,
//! `texts-00000.npy`, `text_to_image-00000.npy` with ids counted from the piece's first
//! image, …), so a set larger than memory can be made: 220,000 images are 30 GB.

use std::path::Path;
use std::time::Instant;

use tandem::data::{LatentRows, npy, shard_name};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |s: &str, what: &str| -> usize {
        s.parse()
            .unwrap_or_else(|_| panic!("{what} is a number, not `{s}`"))
    };
    let (out, n, per_image, pieces) = match &args[..] {
        [out, n] => (out, number(n, "N_IMAGES"), 5, None),
        [out, n, per] => (
            out,
            number(n, "N_IMAGES"),
            number(per, "CAPTIONS_PER_IMAGE"),
            None,
        ),
        [out, n, per, pieces] => (
            out,
            number(n, "N_IMAGES"),
            number(per, "CAPTIONS_PER_IMAGE"),
            Some(number(pieces, "PIECES").max(1)),
        ),
        _ => panic!("usage: synthetic_dataset OUT N_IMAGES [CAPTIONS_PER_IMAGE [PIECES]]"),
    };
    let out = Path::new(out);
    std::fs::create_dir_all(out).expect("create the output folder");
    let started = Instant::now();
    match pieces {
        None => write_piece(out, None, 0..n, per_image),
        Some(pieces) => {
            for k in 0..pieces {
                write_piece(
                    out,
                    Some(k),
                    k * n / pieces..(k + 1) * n / pieces,
                    per_image,
                );
                eprintln!("piece {} of {pieces} written", k + 1);
            }
        }
    }
    println!(
        "{n} images × 4096 and {} captions × 6000 in {} ({:.1} s)",
        n * per_image,
        out.display(),
        started.elapsed().as_secs_f64()
    );
}

/// Writes images `range` and their captions: as the whole set (`piece` None, global ids) or as
/// shard `piece` (ids counted from `range.start`).
fn write_piece(out: &Path, piece: Option<usize>, range: std::ops::Range<usize>, per_image: usize) {
    let name = |array: &str| match piece {
        Some(k) => out.join(shard_name(array, k)),
        None => out.join(format!("{array}.npy")),
    };
    let rows = |dim: usize, basis_seed: u64| LatentRows {
        dim,
        basis_seed,
        ..LatentRows::default()
    };
    let n = range.len();
    let images = rows(4096, 1).draw_rows(range.start, n, 1);
    npy::write_f32(&name("images"), n, 4096, &images).expect("write the image features");
    drop(images);
    let captions = n * per_image;
    let texts = rows(6000, 2).draw_rows(range.start * per_image, captions, 2);
    npy::write_f32(&name("texts"), captions, 6000, &texts).expect("write the caption features");
    drop(texts);
    let offset = if piece.is_some() { 0 } else { range.start };
    let owner: Vec<i64> = (0..captions)
        .map(|c| (offset + c / per_image) as i64)
        .collect();
    std::fs::write(name("text_to_image"), npy::encode_i64(&owner)).expect("write the ids");
}
