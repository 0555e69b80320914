//! Links the system OpenBLAS when the `openblas` feature is on: ndarray's `blas` feature
//! declares the CBLAS functions but leaves the choice of library to the final crate.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_OPENBLAS").is_some() {
        println!("cargo:rustc-link-lib=openblas");
    }
}
