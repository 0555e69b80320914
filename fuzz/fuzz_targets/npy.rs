//! Any bytes as a features file and as an ids file: an error or a valid array, never a panic,
//! and a features matrix that holds only finite values of the shape it claims.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.npy");
    if let Ok(m) = tandem::data::npy::parse_features(path, data.to_vec()) {
        assert_eq!(m.data.len(), m.rows * m.cols);
        assert!(m.data.iter().all(|v| v.is_finite()));
    }
    let _ = tandem::data::npy::parse_ids(path, data.to_vec());
});
