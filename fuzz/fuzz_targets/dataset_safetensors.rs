//! Any bytes as a `dataset.safetensors`: an error or three consistent arrays, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("dataset.safetensors");
    if let Ok((images, texts, ids)) = tandem::data::parse_safetensors_dataset(path, data) {
        assert_eq!(images.data.len(), images.rows * images.cols);
        assert_eq!(texts.data.len(), texts.rows * texts.cols);
        assert!(images.data.iter().chain(&texts.data).all(|v| v.is_finite()));
        let _ = ids;
    }
});
