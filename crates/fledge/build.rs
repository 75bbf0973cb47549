//! Release builds lay out the program's code in the order of `code-order.txt`: the
//! functions a running server executes (from starting up to proxying, judging and
//! answering the API), hottest first, side by side at the start of the text. The
//! kernel maps code in pages and in blocks of pages around each one touched, so
//! executed code spread over the 25 MB text keeps most of it resident; gathered, it
//! keeps a few MiB. `scripts/code-order` writes the file from a profile of the
//! current build; a name the build no longer has is skipped.
//!
//! Only the linker's input changes: the code is the same, in another order.
//!
//! Release builds also pack the program's relative relocations (`DT_RELR`) when the C
//! library they link against reads them (glibc 2.36 and later): the 31,000 relative
//! relocations of a position-independent `fledge` take 730 KiB as `.rela.dyn`, all of
//! it read at start and resident from then on, and a few KiB packed.

use std::path::Path;

fn main() {
    // Read when the script runs, not when it is compiled: a target directory shared
    // by two checkouts of the repository reuses the compiled script (cargo hashes a
    // workspace member by its path relative to the workspace), which would otherwise
    // look for the list in the checkout that compiled it.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = Path::new(&dir).join("code-order.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=FLEDGE_CODE_ORDER");
    // Debug builds name their functions differently (and are not run for long).
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    // An lld option: the toolchain links this target with lld. A build that
    // configures another linker turns the ordering off with FLEDGE_CODE_ORDER=0.
    let lld = std::env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    let wanted = std::env::var("FLEDGE_CODE_ORDER").map_or(true, |v| v != "0");
    if release && lld && wanted && order.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    let native = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
    if release && lld && native && libc_reads_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the C library of this machine reads packed relative relocations: it
/// defines the version `GLIBC_ABI_DT_RELR`, which the linker then makes the program
/// require (so that an older C library refuses to load it, rather than running it
/// unrelocated).
fn libc_reads_relr() -> bool {
    const LIBC: [&str; 4] = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
        "/usr/lib64/libc.so.6",
    ];
    let needle = b"GLIBC_ABI_DT_RELR";
    LIBC.iter()
        .find_map(|path| std::fs::read(path).ok())
        .is_some_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
}
