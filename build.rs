//! Embeds an rpath to libtorch (from the pinned PyPI torch wheel, found by torch-sys) so the binary
//! runs with no environment variables; with the `cuda` feature, force-links libtorch_cuda, which
//! rustc's `--as-needed` would otherwise drop (tch would then never see the GPU).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        // For provenance (manifest.json): the torch wheel's version.py sits beside lib/.
        println!("cargo:rustc-env=RLVR_LIBTORCH_LIB={lib}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    // Where the project lives at build time: the default place to look for .venv (ONNX Runtime,
    // MATH data, tokenizer) and ../shared/data. Overridable at run time by flags and env vars.
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    println!("cargo:rustc-env=RLVR_PROJECT_ROOT={root}");
}
