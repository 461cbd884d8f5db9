//! The guest author's kit, as an author outside this repository uses it: `guest new` writes a
//! standalone crate that builds and passes its tests as generated; an edited version is recorded,
//! diffed against the lake's history and promoted to a running host.
//!
//! The generated crates build in one target directory beside the workspace's
//! (`<target>/guest-kit`), so wit-bindgen compiles once per target directory (~1 min cold).

use crate::support::{guests_dir, last_json_line, stockpipe, walk, workspace};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use stockpipe::runtime::{StageKind, component_version};
use stockpipe::tools::guest_new;

/// `<target>/guest-kit`, from where cargo put the binary under test (`<target>/release/stockpipe`).
fn kit_target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stockpipe"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("guest-kit")
}

/// Runs cargo in a generated crate, asserting success.
fn cargo(crate_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(crate_dir)
        .env("CARGO_TARGET_DIR", kit_target_dir())
        // The workspace's test run sets these for itself; the generated crate is another project.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "cargo {args:?} in {}:\n{text}",
        crate_dir.display()
    );
    text
}

/// Generates a crate for `kind` named `name` under `parent` and builds its component.
fn new_guest(parent: &Path, kind: StageKind, name: &str) -> (PathBuf, PathBuf) {
    let dir = parent.join(name);
    stockpipe(&["guest", "new", kind.name(), dir.to_str().unwrap()]);
    (dir, built(name))
}

/// Where cargo writes the component of the generated crate `name`.
fn built(name: &str) -> PathBuf {
    kit_target_dir().join(
        guest_new::component_path(name)
            .strip_prefix("target/")
            .unwrap(),
    )
}

/// `stockpipe guest test WASM --stage S --fixtures DIR [extra…]`, asserting success.
fn guest_test(
    wasm: &Path,
    kind: StageKind,
    fixtures: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "guest",
        "test",
        wasm.to_str().unwrap(),
        "--stage",
        kind.name(),
        "--fixtures",
        fixtures.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    stockpipe(&args)
}

/// `stockpipe guest diff OLD NEW --stage validate --lake LAKE [extra…]`, asserting success.
fn guest_diff(old: &str, new: &str, lake: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "guest",
        "diff",
        old,
        new,
        "--stage",
        "validate",
        "--lake",
        lake.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    stockpipe(&args)
}

#[test]
fn the_embedded_guest_files_are_the_shipped_guests_files() {
    for kind in guest_new::TEMPLATES {
        let root = workspace().join("guests").join(kind.name());
        let mut on_disk: Vec<String> = ["src", "fixtures"]
            .iter()
            .flat_map(|d| walk(&root.join(d)))
            .map(|p| {
                p.strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        on_disk.sort();
        let mut embedded = guest_new::embedded_guest_files(kind);
        embedded.sort();
        assert_eq!(
            embedded,
            on_disk,
            "{}: update guest_new::stage_files",
            kind.name()
        );
    }
    let mut model: Vec<String> = walk(&workspace().join("model/src"))
        .iter()
        .map(|p| {
            p.strip_prefix(workspace().join("model"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|p| !p.starts_with("src/json"))
        .collect();
    model.sort();
    let vendored: Vec<String> = guest_new::files("g", stockpipe::runtime::StageKind::Validate)
        .into_iter()
        .filter_map(|(p, _)| {
            p.strip_prefix("vendor/stockpipe-model")
                .ok()
                .filter(|p| p.starts_with("src"))
                .map(|p| p.to_string_lossy().into_owned())
        })
        .collect();
    let mut vendored = vendored;
    vendored.sort();
    assert_eq!(vendored, model, "update guest_new::MODEL_SOURCES");
}

#[test]
fn every_stage_s_new_crate_builds_and_passes_its_tests_as_generated() {
    let _heavy = crate::support::HEAVY.blocking_lock();
    let parent = tempfile::tempdir().unwrap();
    for kind in guest_new::TEMPLATES {
        let name = format!("my-{}", kind.name());
        let (dir, wasm) = new_guest(parent.path(), kind, &name);
        // Outside any workspace: its own root.
        assert!(
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .unwrap()
                .contains("[workspace]")
        );
        let tests = cargo(&dir, &["test", "--release"]);
        assert!(tests.contains("test result: ok"), "{tests}");
        cargo(&dir, &["build", "--release", "--target", "wasm32-wasip2"]);
        let out = guest_test(&wasm, kind, &dir.join("fixtures"), &[]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(" 0 failed"), "{}: {text}", kind.name());
    }
}

/// Makes the generated validate refuse one instrument, with reason `other`.
fn refuse_instrument(crate_dir: &Path, token: u64) {
    let logic = crate_dir.join("src/logic.rs");
    let text = std::fs::read_to_string(&logic).unwrap();
    let anchor =
        "pub fn validate_tick(config: &ValidateConfig, t: &TickRef<'_>) -> Result<(), Rejection> {";
    assert!(
        text.contains(anchor),
        "the generated logic.rs changed shape"
    );
    let edited = text.replace(
        anchor,
        &format!(
            "{anchor}\n    if t.instrument_token == {token} {{\n        return Err(Rejection {{ code: ReasonCode::Other, message: \"suspended\".into() }});\n    }}"
        ),
    );
    std::fs::write(&logic, edited).unwrap();
}

/// A lake made by the pipeline from simulated ticks; returns its directory and its documents.
fn lake_of(dir: &Path, ticks: usize) -> (PathBuf, Vec<Value>) {
    let input = dir.join("ticks.ndjson");
    stockpipe(&[
        "simulate",
        "--instruments",
        "40",
        "--ticks",
        &ticks.to_string(),
        "--seed",
        "7",
        "--out",
        input.to_str().unwrap(),
    ]);
    let lake = dir.join("lake");
    stockpipe(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--once",
        "--lake",
        lake.to_str().unwrap(),
    ]);
    let docs = crate::support::lake_documents(&lake.join("stock-stream"));
    assert_eq!(docs.len(), ticks);
    (lake, docs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_guest_recorded_diffed_against_the_lake_and_promoted() {
    let _heavy = crate::support::HEAVY.lock().await;
    let work = tempfile::tempdir().unwrap();
    let (lake, docs) = lake_of(work.path(), 4000);
    let token = docs[0]["instrument_token"].as_u64().unwrap();
    let refused = docs
        .iter()
        .filter(|d| d["instrument_token"].as_u64() == Some(token))
        .count() as u64;

    // The author's change: one instrument suspended.
    let dir = work.path().join("suspend-one");
    stockpipe(&["guest", "new", "validate", dir.to_str().unwrap()]);
    refuse_instrument(&dir, token);
    cargo(&dir, &["build", "--release", "--target", "wasm32-wasip2"]);
    let wasm = built("suspend-one");
    let wasm_arg = wasm.to_str().unwrap();

    // --record writes the new version's outcomes; the recorded fixtures then pass.
    let fixtures = dir.join("fixtures");
    guest_test(&wasm, StageKind::Validate, &fixtures, &["--record"]);
    let recorded = std::fs::read_to_string(fixtures.join("sample/expected.jsonl")).unwrap();
    assert!(
        recorded.lines().all(|l| l.starts_with("{\"verdict\":")),
        "{recorded}"
    );
    guest_test(&wasm, StageKind::Validate, &fixtures, &[]);

    // The diff over the whole lake: exactly that instrument's ticks flip, with that reason.
    let report_path = work.path().join("diff.json");
    guest_diff(
        "validate",
        wasm_arg,
        &lake,
        &["--report", report_path.to_str().unwrap(), "--examples", "3"],
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["ticks"], docs.len() as u64, "{report}");
    assert_eq!(report["changed"], refused, "{report}");
    assert_eq!(
        report["differences"],
        serde_json::json!({ "accepted->rejected:other": refused }),
        "{report}"
    );
    let examples = report["examples"]["accepted->rejected:other"]
        .as_array()
        .unwrap();
    assert_eq!(examples.len() as u64, refused.min(3));
    for example in examples {
        assert_eq!(example["instrument_token"], token);
        assert_eq!(example["new"]["code"], "other");
        assert_eq!(example["old"]["verdict"], "accepted");
        let id = example["event_id"].as_str().unwrap();
        assert!(
            docs.iter().any(|d| d["event_id"] == id),
            "{id} is a lake document's id"
        );
    }
    assert_eq!(
        report["new"]["version"],
        component_version(&std::fs::read(&wasm).unwrap())
    );

    // A window: only the first half of the ticks by time.
    let mut times: Vec<&str> = docs
        .iter()
        .map(|d| d["timestamp"].as_str().unwrap())
        .collect();
    times.sort();
    let cut = times[times.len() / 2];
    let out = guest_diff("validate", wasm_arg, &lake, &["--to", cut]);
    let windowed = last_json_object(&out);
    let before = docs
        .iter()
        .filter(|d| d["timestamp"].as_str().unwrap() < cut)
        .count() as u64;
    let refused_before = docs
        .iter()
        .filter(|d| {
            d["timestamp"].as_str().unwrap() < cut && d["instrument_token"].as_u64() == Some(token)
        })
        .count() as u64;
    assert_eq!(windowed["ticks"], before);
    assert_eq!(windowed["changed"], refused_before);

    // The same version against itself changes nothing, and --fail-on-change passes.
    guest_diff(wasm_arg, wasm_arg, &lake, &["--fail-on-change"]);

    // Promote to a running host: its shadow check passes (one instrument of 40 is under the 5 %
    // limit), it swaps, keeps the report in its history and the file in its guests directory.
    let guests = guests_dir();
    let host = Host::start(guests.path(), work.path());
    host.wait_processed(1500).await;
    let out = Command::new(env!("CARGO_BIN_EXE_stockpipe"))
        .args([
            "guest", "promote", wasm_arg, "--stage", "validate", "--http", &host.url,
        ])
        .args(["--diff-report", report_path.to_str().unwrap()])
        .env("STOCKPIPE_ADMIN_TOKEN", HOST_TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The host answers once it decided; the loop puts the new version in at its next batch.
    let view = host
        .serving("validate", report["new"]["version"].as_str().unwrap())
        .await;
    let swapped = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["trigger"] == "promote" && e["outcome"] == "swapped")
        .unwrap_or_else(|| panic!("no promotion in {view}"));
    assert_eq!(swapped["diff_report"], report);
    assert_eq!(
        std::fs::read(guests.path().join("validate.wasm")).unwrap(),
        std::fs::read(&wasm).unwrap(),
        "a restart keeps the promoted version"
    );

    // A broken candidate is refused, the host says why, and the directory keeps what serves.
    let broken = work.path().join("broken_validate.wasm");
    std::fs::write(&broken, b"\0asm not really").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stockpipe"))
        .args([
            "guest",
            "promote",
            broken.to_str().unwrap(),
            "--http",
            &host.url,
        ])
        .env("STOCKPIPE_ADMIN_TOKEN", HOST_TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read(guests.path().join("validate.wasm")).unwrap(),
        std::fs::read(&wasm).unwrap()
    );
    // Without the token the host answers 401, and the command says what to set.
    let out = Command::new(env!("CARGO_BIN_EXE_stockpipe"))
        .args([
            "guest", "promote", wasm_arg, "--stage", "validate", "--http", &host.url,
        ])
        .env_remove("STOCKPIPE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("STOCKPIPE_ADMIN_TOKEN"),
        "{out:?}"
    );
}

fn last_json_object(out: &std::process::Output) -> Value {
    // The report is pretty-printed JSON on stdout.
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| last_json_line(out))
}

const HOST_TOKEN: &str = "kit-test-token";

/// `stockpipe run --simulate` with a guests directory and the API on a free loopback port.
struct Host {
    child: std::process::Child,
    url: String,
}

impl Host {
    fn start(guests: &Path, work: &Path) -> Self {
        let port = crate::emulators::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_stockpipe"))
            .args([
                "run",
                "--simulate",
                "3000",
                "--guests",
                guests.to_str().unwrap(),
            ])
            .args(["--http", &format!("127.0.0.1:{port}")])
            .args(["--lake", work.join("host-lake").to_str().unwrap()])
            .env("STOCKPIPE_ADMIN_TOKEN", HOST_TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn guests(&self) -> Value {
        reqwest::get(format!("{}/guests", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The host's view once `stage` is served by `version` (within 30 s).
    async fn serving(&self, stage: &str, version: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let view = self.guests().await;
            let loaded = view["guests"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["stage"] == stage && g["version"] == version);
            if loaded {
                return view;
            }
            assert!(
                Instant::now() < deadline,
                "{stage} never served {version}: {view}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_processed(&self, ticks: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(answer) = reqwest::get(format!("{}/guests", self.url)).await {
                let view: Value = answer.json().await.unwrap_or_default();
                if view["processed"].as_u64().unwrap_or(0) >= ticks {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the host did not process {ticks} ticks within 60 s");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
