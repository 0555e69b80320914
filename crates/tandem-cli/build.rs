//! Compiles `src/allocator_options.c`, which sets mimalloc's purge delay before `main` (see
//! that file for why). It is linked whole: nothing refers to its one constructor by name, so a
//! plain static library would be left out by the linker.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/allocator_options.c");
    // Set by libmimalloc-sys (`links = "mimalloc"`) for the crates that depend on it directly.
    let include = std::env::var("DEP_MIMALLOC_INCLUDE_DIR")
        .expect("libmimalloc-sys exports its include directory as DEP_MIMALLOC_INCLUDE_DIR");
    cc::Build::new()
        .file("src/allocator_options.c")
        .include(include)
        .link_lib_modifier("+whole-archive")
        .compile("tandem_allocator_options");
}
