//! Embeds an rpath to libtorch (from the pinned PyPI torch wheel, found by torch-sys) so the binary
//! runs with no environment variables; with the `cuda` feature, force-links libtorch_cuda, which
//! rustc's `--as-needed` would otherwise drop (tch would then never see the GPU).
//!
//! Also compiles the profiler shim (`src/model/shim/profiler.cpp`: libtorch's Kineto profiler) and
//! the c10d shim (`src/dist/shim/c10d_shim.cpp`: libtorch's distributed engine,
//! Gloo always, NCCL with the `cuda` feature) against the wheel's headers, the way torch-sys
//! builds its own wrapper.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/dist/shim");
    println!("cargo:rerun-if-changed=src/model/shim");
    let cuda = std::env::var_os("CARGO_FEATURE_CUDA").is_some();
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        // For provenance (manifest.json): the torch wheel's version.py sits beside lib/.
        println!("cargo:rustc-env=RLVR_LIBTORCH_LIB={lib}");
        build_c10d_shim(Path::new(&lib), cuda);
        build_profiler_shim(Path::new(&lib));
        if cuda {
            build_cuda_graph_shim(Path::new(&lib));
        }
    } else {
        panic!("torch-sys did not report DEP_TCH_LIBTORCH_LIB: cannot build the c10d shim");
    }
    if cuda {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        // c10's CUDA streams and guards, for the CUDA-graph shim
        println!("cargo:rustc-link-arg=-lc10_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    // Where the project lives at build time: the default place to look for .venv (ONNX Runtime,
    // MATH data, tokenizer) and ../shared/data. Overridable at run time by flags and env vars.
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    println!("cargo:rustc-env=RLVR_PROJECT_ROOT={root}");
}

/// A C++ build of `file` against the torch wheel's headers, the way torch-sys builds its wrapper.
fn torch_cpp(libtorch_lib: &Path, file: &str) -> cc::Build {
    let include = libtorch_lib.parent().expect("libtorch lib folder has a parent").join("include");
    let mut b = cc::Build::new();
    b.cpp(true)
        .file(file)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(false)
        .opt_level(1);
    b
}

fn build_c10d_shim(libtorch_lib: &Path, cuda: bool) {
    let torch = libtorch_lib.parent().expect("libtorch lib folder has a parent");
    let mut b = torch_cpp(libtorch_lib, "src/dist/shim/c10d_shim.cpp");
    b.include("src/dist/shim/gloo_decls").flag("-DGLOG_USE_GLOG_EXPORT").flag("-DUSE_C10D_GLOO");
    if cuda {
        // CUDA runtime and NCCL headers from the torch wheel's nvidia-* dependencies
        // (site-packages/nvidia), plus the two header-only wheels the runtime's headers include
        // (nvidia-cuda-crt: crt/host_config.h; nvidia-cuda-cccl: nv/target), which `make build-cuda`
        // installs.
        let nvidia: PathBuf = torch.parent().expect("site-packages").join("nvidia");
        for need in [
            "cu13/include/cuda_runtime_api.h",
            "cu13/include/crt/host_config.h",
            "cu13/include/nv/target",
            "nccl/include/nccl.h",
        ] {
            if !nvidia.join(need).exists() {
                panic!(
                    "the cuda feature compiles the NCCL backend against the CUDA headers, and {} is missing: \
                     `make build-cuda` installs nvidia-cuda-crt and nvidia-cuda-cccl into the venv",
                    nvidia.join(need).display()
                );
            }
        }
        for sub in ["cu13/include", "nccl/include"] {
            b.include(nvidia.join(sub));
        }
        b.flag("-DUSE_C10D_NCCL").flag("-DUSE_CUDA").flag("-DRLVR_WITH_NCCL");
    }
    b.compile("rlvr_c10d");
}

/// libtorch's per-operator profiler (Kineto) for `generate --profile-ops`: host ops everywhere,
/// CUDA activity on GPU machines (`src/model/shim/profiler.cpp`).
fn build_profiler_shim(libtorch_lib: &Path) {
    torch_cpp(libtorch_lib, "src/model/shim/profiler.cpp").compile("rlvr_profiler");
}

/// `src/model/shim/cuda_graph.cpp` (libtorch's CUDAGraph for the static decode step), `cuda` only.
fn build_cuda_graph_shim(libtorch_lib: &Path) {
    let nvidia: PathBuf = libtorch_lib.parent().and_then(Path::parent).expect("site-packages").join("nvidia");
    torch_cpp(libtorch_lib, "src/model/shim/cuda_graph.cpp")
        .include(nvidia.join("cu13/include"))
        .flag("-DUSE_CUDA")
        .compile("rlvr_cuda_graph");
}
