//! Compiles `src/allocator_options.c`, which sets mimalloc's purge delay before `main` (see
//! that file for why), and links its object into the `tandem` binary only: nothing refers to
//! its one constructor by name (a static library's member would be left out by the linker),
//! and the test binaries do not link mimalloc.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/allocator_options.c");
    // Set by libmimalloc-sys (`links = "mimalloc"`) for the crates that depend on it directly.
    let include = std::env::var("DEP_MIMALLOC_INCLUDE_DIR")
        .expect("libmimalloc-sys exports its include directory as DEP_MIMALLOC_INCLUDE_DIR");
    let objects = cc::Build::new()
        .file("src/allocator_options.c")
        .include(include)
        .cargo_metadata(false)
        .compile_intermediates();
    for object in objects {
        println!("cargo:rustc-link-arg-bins={}", object.display());
    }
}
