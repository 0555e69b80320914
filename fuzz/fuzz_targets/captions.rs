//! Any bytes as `captions.jsonl` for a fixed set of ids: an error or one caption per id.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ids = [0u32, 0, 1, 2];
    let path = Path::new("captions.jsonl");
    if let Ok(captions) = tandem::data::parse_captions(path, data.to_vec(), &ids) {
        assert_eq!(captions.len(), ids.len());
    }
});
