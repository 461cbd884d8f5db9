//! `stockpipe guest new`: a standalone guest crate, outside any workspace, that builds and tests as
//! generated.
//!
//! The crate starts from the stage's shipped guest — its `lib.rs` adapter, its `logic.rs` (and
//! `plan.rs` for route, which names the contract's types) with their native unit tests, its
//! fixtures — so an author edits working code rather than a stub. The contract's plain-Rust types
//! (each stage's config, route's plan, aggregate's bars) are the model crate's, vendored with it. Everything it needs is vendored at the exact version this binary
//! speaks, embedded here at build time: the WIT package (`wit/pipeline.wit`,
//! `stockpipe:pipeline@0.2.0`) and the tick model the logic is written against
//! (`vendor/stockpipe-model`, without the host's JSON codec). The only registry dependency is
//! wit-bindgen, pinned to the version the host's wasmtime was tested with. Nothing is fetched
//! at generation time, so `guest new` works offline and a crate is tied to the contract of the
//! host that made it.

use crate::runtime::StageKind;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// The wit-bindgen the shipped guests are built with (the workspace pins it; a test holds the two
/// equal).
pub const WIT_BINDGEN_VERSION: &str = "0.61.1";

/// The WIT package the generated crate implements (a test holds it to `wit/pipeline.wit`).
pub const WIT_PACKAGE: &str = "stockpipe:pipeline@0.2.0";

const WIT: &str = include_str!("../../../wit/pipeline.wit");
const TOOLCHAIN: &str = include_str!("../../../rust-toolchain.toml");

/// The tick model's sources, as the guests compile them (the `json` module is the host's).
const MODEL_SOURCES: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../../model/src/lib.rs")),
    (
        "src/columns.rs",
        include_str!("../../../model/src/columns.rs"),
    ),
    (
        "src/example.rs",
        include_str!("../../../model/src/example.rs"),
    ),
    (
        "src/guest_glue.rs",
        include_str!("../../../model/src/guest_glue.rs"),
    ),
    ("src/hash.rs", include_str!("../../../model/src/hash.rs")),
    ("src/time.rs", include_str!("../../../model/src/time.rs")),
    (
        "src/validate.rs",
        include_str!("../../../model/src/validate.rs"),
    ),
    (
        "src/enrich.rs",
        include_str!("../../../model/src/enrich.rs"),
    ),
    ("src/route.rs", include_str!("../../../model/src/route.rs")),
    (
        "src/aggregate.rs",
        include_str!("../../../model/src/aggregate.rs"),
    ),
    ("src/alert.rs", include_str!("../../../model/src/alert.rs")),
    ("src/state.rs", include_str!("../../../model/src/state.rs")),
];

/// Each stage's guest sources and fixtures, relative to its crate.
fn stage_files(stage: StageKind) -> &'static [(&'static str, &'static str)] {
    match stage {
        StageKind::Validate => &[
            (
                "src/lib.rs",
                include_str!("../../../guests/validate/src/lib.rs"),
            ),
            (
                "src/logic.rs",
                include_str!("../../../guests/validate/src/logic.rs"),
            ),
            (
                "src/fast.rs",
                include_str!("../../../guests/validate/src/fast.rs"),
            ),
            (
                "fixtures/refusals/input.jsonl",
                include_str!("../../../guests/validate/fixtures/refusals/input.jsonl"),
            ),
            (
                "fixtures/refusals/expected.jsonl",
                include_str!("../../../guests/validate/fixtures/refusals/expected.jsonl"),
            ),
            (
                "fixtures/sample/input.jsonl",
                include_str!("../../../guests/validate/fixtures/sample/input.jsonl"),
            ),
            (
                "fixtures/sample/expected.jsonl",
                include_str!("../../../guests/validate/fixtures/sample/expected.jsonl"),
            ),
        ],
        StageKind::Enrich => &[
            (
                "src/lib.rs",
                include_str!("../../../guests/enrich/src/lib.rs"),
            ),
            (
                "src/logic.rs",
                include_str!("../../../guests/enrich/src/logic.rs"),
            ),
            (
                "fixtures/sample/input.jsonl",
                include_str!("../../../guests/enrich/fixtures/sample/input.jsonl"),
            ),
            (
                "fixtures/sample/expected.jsonl",
                include_str!("../../../guests/enrich/fixtures/sample/expected.jsonl"),
            ),
        ],
        StageKind::Route => &[
            (
                "src/lib.rs",
                include_str!("../../../guests/route/src/lib.rs"),
            ),
            (
                "src/logic.rs",
                include_str!("../../../guests/route/src/logic.rs"),
            ),
            (
                "src/plan.rs",
                include_str!("../../../guests/route/src/plan.rs"),
            ),
            (
                "fixtures/thresholds/input.jsonl",
                include_str!("../../../guests/route/fixtures/thresholds/input.jsonl"),
            ),
            (
                "fixtures/thresholds/expected.jsonl",
                include_str!("../../../guests/route/fixtures/thresholds/expected.jsonl"),
            ),
        ],
        StageKind::Alert => &[
            (
                "src/lib.rs",
                include_str!("../../../guests/alert/src/lib.rs"),
            ),
            (
                "src/logic.rs",
                include_str!("../../../guests/alert/src/logic.rs"),
            ),
            (
                "fixtures/cooldown/input.jsonl",
                include_str!("../../../guests/alert/fixtures/cooldown/input.jsonl"),
            ),
            (
                "fixtures/cooldown/expected.jsonl",
                include_str!("../../../guests/alert/fixtures/cooldown/expected.jsonl"),
            ),
            (
                "fixtures/crossing/input.jsonl",
                include_str!("../../../guests/alert/fixtures/crossing/input.jsonl"),
            ),
            (
                "fixtures/crossing/expected.jsonl",
                include_str!("../../../guests/alert/fixtures/crossing/expected.jsonl"),
            ),
            (
                "fixtures/flap_in_band/input.jsonl",
                include_str!("../../../guests/alert/fixtures/flap_in_band/input.jsonl"),
            ),
            (
                "fixtures/flap_in_band/expected.jsonl",
                include_str!("../../../guests/alert/fixtures/flap_in_band/expected.jsonl"),
            ),
            (
                "fixtures/for_ms/input.jsonl",
                include_str!("../../../guests/alert/fixtures/for_ms/input.jsonl"),
            ),
            (
                "fixtures/for_ms/expected.jsonl",
                include_str!("../../../guests/alert/fixtures/for_ms/expected.jsonl"),
            ),
            (
                "fixtures/resolve/input.jsonl",
                include_str!("../../../guests/alert/fixtures/resolve/input.jsonl"),
            ),
            (
                "fixtures/resolve/expected.jsonl",
                include_str!("../../../guests/alert/fixtures/resolve/expected.jsonl"),
            ),
            (
                "fixtures/rules_refused/input.jsonl",
                include_str!("../../../guests/alert/fixtures/rules_refused/input.jsonl"),
            ),
            (
                "fixtures/rules_refused/expected.jsonl",
                include_str!("../../../guests/alert/fixtures/rules_refused/expected.jsonl"),
            ),
            (
                "fixtures/volume_spike/input.jsonl",
                include_str!("../../../guests/alert/fixtures/volume_spike/input.jsonl"),
            ),
            (
                "fixtures/volume_spike/expected.jsonl",
                include_str!("../../../guests/alert/fixtures/volume_spike/expected.jsonl"),
            ),
        ],
        // Not offered: the aggregate guest is not a template (see `TEMPLATES`).
        StageKind::Aggregate => &[],
    }
}

/// The files of the shipped guest a generated crate copies, for the test that holds this list to
/// the tree (a fixture added to a guest and not here would silently be left out).
pub fn embedded_guest_files(stage: StageKind) -> Vec<&'static str> {
    stage_files(stage).iter().map(|(path, _)| *path).collect()
}

/// A crate name from the directory's name: lowercase ASCII letters, digits, `-` and `_`.
pub fn crate_name(dir: &Path) -> anyhow::Result<String> {
    let raw = dir
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable file name", dir.display()))?;
    let name: String = raw
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        bail!("cannot make a crate name of {raw:?}: start it with a letter");
    }
    Ok(name)
}

/// The `.wasm` cargo writes for crate `name`.
pub fn component_path(name: &str) -> String {
    format!(
        "target/wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    )
}

fn manifest(name: &str, stage: StageKind) -> String {
    format!(
        r#"# A stockpipe {stage} guest, generated by `stockpipe guest new {stage}` (stockpipe {version}).
[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
rust-version = "1.95"
publish = false

[lib]
# cdylib: the wasm component; rlib: the same logic linked natively for `cargo test`.
crate-type = ["cdylib", "rlib"]

[dependencies]
# The tick model the logic is written against, vendored at the host's version.
stockpipe-model = {{ path = "vendor/stockpipe-model" }}

[target.'cfg(target_arch = "wasm32")'.dependencies]
# Pinned to the version the host is built and tested with.
wit-bindgen = {{ version = "={wit_bindgen}", default-features = false, features = ["macros", "realloc"] }}

[lints.rust]
unsafe_code = "deny"
unused_must_use = "deny"

[profile.release]
codegen-units = 1

# A workspace of its own: generated inside another project, it is not taken in by that one.
[workspace]
"#,
        stage = stage.name(),
        version = env!("CARGO_PKG_VERSION"),
        wit_bindgen = WIT_BINDGEN_VERSION,
    )
}

fn model_manifest() -> String {
    format!(
        r#"# Vendored by `stockpipe guest new` from stockpipe {version}: the tick as plain Rust, as the
# host lays it out for the guests. Do not edit; generate a new crate to move to a newer host.
[package]
name = "stockpipe-model"
version = "{version}"
edition = "2024"
rust-version = "1.95"
publish = false

[features]
# The host's JSON codec is not vendored: guests never decode JSON.
json = []

[lints.rust]
unsafe_code = "deny"
unused_must_use = "deny"
"#,
        version = env!("CARGO_PKG_VERSION"),
    )
}

fn readme(name: &str, stage: StageKind) -> String {
    let stage = stage.name();
    let wasm = component_path(name);
    format!(
        r#"# {name}

A stockpipe **{stage}** guest: a WebAssembly component implementing `{WIT_PACKAGE}`
(`wit/pipeline.wit`, vendored). `src/lib.rs` only adapts the WIT types; the rules are in
`src/logic.rs` (plain Rust over borrowed per-tick views, unit-tested natively); `fixtures/` holds
cases for the built component (`input.jsonl` → `expected.jsonl`). A tick's fields beyond its
instant, instrument and last price are `Option`s (feeds send what their mode carries: a Kite `ltp`
tick has only a price, an index no book and no volume): check what is there, and leave a feature
you cannot compute absent.

```sh
cargo test                                                  # the logic's unit tests, natively
cargo build --release --target wasm32-wasip2                # the component: {wasm}
```

Then, with the `stockpipe` binary:

```sh
# 1. Test the component under the production limits against the fixtures
#    (`--record` writes the expected outputs of a known-good build).
stockpipe guest test {wasm} --stage {stage} --fixtures fixtures

# 2. Replay history from the lake through the running version and this one; see what changes.
stockpipe guest diff CURRENT.wasm {wasm} --stage {stage} --lake DIR|gs://bucket/prefix \
    --from 2026-11-30T00:00:00Z --to 2026-12-01T00:00:00Z --report diff.json

# 3. Hand it to a running host (it still runs its own shadow check before swapping).
STOCKPIPE_ADMIN_TOKEN=… stockpipe guest promote {wasm} --stage {stage} \
    --http http://HOST:8080 --diff-report diff.json
```

`vendor/stockpipe-model` and `wit/` come from the stockpipe that generated this crate
({version}); a host of another contract version refuses the component, naming both versions.
"#,
        version = env!("CARGO_PKG_VERSION"),
    )
}

/// Every file of the generated crate: (path relative to its root, contents).
pub fn files(name: &str, stage: StageKind) -> Vec<(PathBuf, String)> {
    let mut out = vec![
        (PathBuf::from("Cargo.toml"), manifest(name, stage)),
        (PathBuf::from("README.md"), readme(name, stage)),
        (PathBuf::from("rust-toolchain.toml"), TOOLCHAIN.to_string()),
        (PathBuf::from(".gitignore"), "/target\n".to_string()),
        (PathBuf::from("wit/pipeline.wit"), WIT.to_string()),
        (
            PathBuf::from("vendor/stockpipe-model/Cargo.toml"),
            model_manifest(),
        ),
    ];
    for (path, text) in MODEL_SOURCES {
        out.push((
            Path::new("vendor/stockpipe-model").join(path),
            text.to_string(),
        ));
    }
    for (path, text) in stage_files(stage) {
        // The shipped guests find the WIT two levels up, in the workspace; here it is vendored.
        let text = text.replace("path: \"../../wit\"", "path: \"wit\"");
        out.push((PathBuf::from(path), text));
    }
    out
}

/// The stages `guest new` writes a crate for: the chain's three and the alert stage (whose rules
/// a user may want to extend with kinds of their own).
pub const TEMPLATES: [StageKind; 4] = [
    StageKind::Validate,
    StageKind::Enrich,
    StageKind::Route,
    StageKind::Alert,
];

/// Writes a new guest crate for `kind` into `dir`, which must not exist or be empty. Returns the
/// crate's name.
pub fn generate(stage: StageKind, dir: &Path) -> anyhow::Result<String> {
    if !TEMPLATES.contains(&stage) {
        bail!(
            "no template for the {} stage; `guest new` writes validate, enrich, route or alert",
            stage.name()
        );
    }
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} exists and is not empty; give a new directory",
                dir.display()
            );
        }
    }
    let name = crate_name(dir)?;
    for (path, text) in files(&name, stage) {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names_come_from_the_directory() {
        assert_eq!(
            crate_name(Path::new("/x/My Validator")).unwrap(),
            "my-validator"
        );
        assert_eq!(
            crate_name(Path::new("spread_guard")).unwrap(),
            "spread_guard"
        );
        assert!(crate_name(Path::new("/x/9lives")).is_err());
        assert!(crate_name(Path::new("/")).is_err());
        assert_eq!(
            component_path("my-validator"),
            "target/wasm32-wasip2/release/my_validator.wasm"
        );
    }

    #[test]
    fn the_adapter_points_at_the_vendored_wit_and_nothing_outside_the_crate() {
        for kind in TEMPLATES {
            for (path, text) in files("g", kind) {
                assert!(
                    !text.contains("../../"),
                    "{}: {} reaches outside the crate",
                    kind.name(),
                    path.display()
                );
            }
            let lib = files("g", kind)
                .into_iter()
                .find(|(p, _)| p == Path::new("src/lib.rs"))
                .unwrap()
                .1;
            assert!(lib.contains("path: \"wit\""), "{}", kind.name());
        }
    }

    #[test]
    fn the_vendored_versions_are_the_workspace_pins() {
        let workspace = include_str!("../../../Cargo.toml");
        assert!(
            workspace.contains(&format!(
                "wit-bindgen = {{ version = \"={WIT_BINDGEN_VERSION}\""
            )),
            "WIT_BINDGEN_VERSION differs from the workspace's pin"
        );
        assert!(WIT.contains(&format!("package {WIT_PACKAGE};")));
    }

    #[test]
    fn a_non_empty_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep"), "x").unwrap();
        let err = generate(StageKind::Validate, dir.path()).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("keep")).unwrap(),
            "x"
        );
    }
}
