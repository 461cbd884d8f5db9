//! Shared helpers: sandboxes, components, ticks.

use std::path::PathBuf;
use std::sync::Arc;
use stockpipe::runtime::sandbox::{Sandbox, SandboxLimits};
use stockpipe::runtime::{GuestComponent, StageKind};

pub fn sandbox(limits: SandboxLimits) -> Arc<Sandbox> {
    Arc::new(Sandbox::new(limits).expect("sandbox"))
}

/// Tight limits so that hostile guests are stopped quickly.
pub fn tight_limits() -> SandboxLimits {
    SandboxLimits {
        call_deadline: std::time::Duration::from_millis(100),
        memory_bytes: 32 << 20,
        epoch_tick: std::time::Duration::from_millis(5),
    }
}

pub fn hostile_component(sandbox: &Sandbox) -> Arc<GuestComponent> {
    let path =
        PathBuf::from(stockpipe::runtime::TEST_GUESTS_DIR).join("stockpipe_guest_hostile.wasm");
    let bytes = std::fs::read(&path).expect("the hostile guest is built by build.rs");
    Arc::new(
        GuestComponent::load(
            sandbox,
            StageKind::Validate,
            &bytes,
            path.display().to_string(),
        )
        .unwrap(),
    )
}

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The project's own sample (made by `stockpipe simulate`).
pub fn sample_payloads() -> Vec<Vec<u8>> {
    stockpipe::source::replay::read_input(&workspace().join("data/stock_data_sample.json")).unwrap()
}
