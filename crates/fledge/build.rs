//! Release builds lay out the program's code in the order of `code-order.txt`: the
//! functions a running server executes (from starting up to proxying, judging and
//! answering the API), hottest first, side by side at the start of the text. The
//! kernel maps code in pages and in blocks of pages around each one touched, so
//! executed code spread over the 25 MB text keeps most of it resident; gathered, it
//! keeps a few MiB. `scripts/code-order` writes the file from a profile of the
//! current build; a name the build no longer has is skipped.
//!
//! Only the linker's input changes: the code is the same, in another order.

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
}
