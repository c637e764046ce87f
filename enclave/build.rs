//! Binaries find libtorch without LD_LIBRARY_PATH (rpath to the libtorch tch built against), and
//! on a CUDA build `libtorch_cuda` stays linked even though no symbol of it is named directly
//! (otherwise `--as-needed` drops it and `tch::Cuda::is_available()` is false).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch_cuda");
            println!("cargo:rustc-link-arg=-Wl,--as-needed");
        }
    }
}
