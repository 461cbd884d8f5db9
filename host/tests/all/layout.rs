//! The host and the guests keep no import cycle between their modules
//! (`scripts/module_cycles.py`), and the checker finds one where there is one.

use std::path::Path;
use std::process::Command;

fn checker(args: &[&Path]) -> std::process::Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Command::new("python3")
        .arg(root.join("scripts/module_cycles.py"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_workspace_has_no_import_cycles() {
    let out = checker(&[]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    // Every member of the workspace is read, the aggregate guest among them.
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
            .unwrap();
    let members = manifest
        .lines()
        .find(|l| l.starts_with("members"))
        .unwrap()
        .matches('"')
        .count()
        / 2;
    assert!(manifest.contains("\"guests/aggregate\""));
    assert!(
        said.contains(&format!("no import cycles in {members} crates")),
        "{said}"
    );
}

#[test]
fn the_checker_finds_a_cycle_through_a_child_module() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(src.join("a/mod.rs"), "pub mod inner;\n").unwrap();
    std::fs::write(src.join("a/inner.rs"), "use crate::b::{f, g as h};\n").unwrap();
    // The parent using its child is no cycle; b using a's child closes one.
    std::fs::write(src.join("b.rs"), "pub fn f() { crate::a::inner::x(); }\n").unwrap();
    let out = checker(&[src]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("a::inner, b"), "{text}");
    std::fs::write(src.join("b.rs"), "pub fn f() {}\n").unwrap();
    assert!(checker(&[src]).status.success());
}
