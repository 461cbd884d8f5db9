//! Builds the guest components (wasm32-wasip2) so that the host binary can embed them as its
//! default guests and the tests never depend on a `.wasm` someone built by hand.
//!
//! The nested cargo uses its own target directory under the workspace's (a build script cannot
//! share the directory whose lock its parent cargo holds), and in release: guests are small.

use std::path::{Path, PathBuf};
use std::process::Command;

const GUESTS: [&str; 5] = ["validate", "enrich", "route", "aggregate", "alert"];
/// Built for the host's tests only: never embedded.
const TEST_GUESTS: [&str; 1] = ["hostile"];
const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("host/ sits in the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    for watched in [
        "wit",
        "guests",
        "model/src",
        "model/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    let target_dir = guest_target_dir(&workspace, &out_dir);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    for guest in GUESTS.iter().chain(&TEST_GUESTS) {
        cmd.args(["-p", &format!("stockpipe-guest-{guest}")]);
    }
    // What the parent cargo set for the host build must not leak into the wasm build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_LLVM_COV",
        "LLVM_PROFILE_FILE",
    ] {
        cmd.env_remove(var);
    }
    // Guests ship without debug info: a few hundred KB instead of megabytes to compile at start-up.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        // Small crates: whole-program optimization costs seconds and makes the calls cheaper.
        .env("CARGO_PROFILE_RELEASE_LTO", "fat")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_INCREMENTAL", "false");
    let status = cmd
        .status()
        .expect("could not run cargo to build the guests");
    if !status.success() {
        panic!(
            "building the guest components failed ({status}); is the {TARGET} target installed? \
             `rustup target add {TARGET}` (rust-toolchain.toml asks rustup for it)"
        );
    }
    let mut listing = String::new();
    for guest in GUESTS {
        let file = format!("stockpipe_guest_{guest}.wasm");
        let built = target_dir.join(TARGET).join("release").join(&file);
        let embedded = out_dir.join(format!("{guest}.wasm"));
        copy_if_changed(&built, &embedded);
        listing.push_str(&format!(
            "(\"{guest}\", include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{guest}.wasm\"))),\n"
        ));
    }
    let test_guests = target_dir.join(TARGET).join("release");
    // Not STOCKPIPE_…: cargo also sets this when it runs the tests, and STOCKPIPE_ variables are
    // configuration overrides that the binary checks strictly.
    println!(
        "cargo:rustc-env=BUILT_GUESTS_DIR_FOR_TESTS={}",
        test_guests.display()
    );
    std::fs::write(
        out_dir.join("embedded_guests.rs"),
        format!("[\n{listing}]\n"),
    )
    .expect("write listing");
}

/// `<workspace target>/guests`, found from OUT_DIR (`<target>/<profile>/build/<pkg>/out`) so that
/// `--target-dir` and `CARGO_TARGET_DIR` are honoured.
fn guest_target_dir(workspace: &Path, out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(|build| build.parent()?.parent())
        .map(|target| target.join("guests"))
        .unwrap_or_else(|| workspace.join("target").join("guests"))
}

fn copy_if_changed(from: &Path, to: &Path) {
    let new = std::fs::read(from)
        .unwrap_or_else(|e| panic!("guest component {} missing: {e}", from.display()));
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        std::fs::write(to, new).unwrap_or_else(|e| panic!("write {}: {e}", to.display()));
    }
}
