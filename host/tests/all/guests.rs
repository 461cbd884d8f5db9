//! The compiled components: fixtures, refusal of broken components, fault isolation, and the wasm
//! chain agreeing with the same logic linked natively.

use crate::support::{hostile_component, sandbox, tight_limits, workspace};
use std::sync::Arc;
use stockpipe::chain::{
    ChainComponents, NativeChain, StageChain, StageConfigs, StageOutcome, WasmChain,
};
use stockpipe::runtime::sandbox::SandboxLimits;
use stockpipe::runtime::{GuestComponent, GuestLoadError, StageKind, embedded_component};
use stockpipe::source::simulate::{SimulateOptions, simulate};
use stockpipe::tools::guest_test::run_fixtures;
use stockpipe_model::Tick;

fn configs() -> StageConfigs {
    stockpipe::config::Config::default().stage_configs(stockpipe::clock::unix_now_us())
}

#[test]
fn every_guest_passes_its_fixtures_under_production_limits() {
    let sandbox = sandbox(SandboxLimits::default());
    for kind in StageKind::ALL.into_iter().chain(StageKind::STATEFUL) {
        let component = Arc::new(
            GuestComponent::load(&sandbox, kind, embedded_component(kind), "embedded").unwrap(),
        );
        let dir = workspace()
            .join("guests")
            .join(kind.name())
            .join("fixtures");
        let report = run_fixtures(sandbox.clone(), component, &configs(), &dir).unwrap();
        assert!(report.lines > 0, "{}: no fixture lines", kind.name());
        let shown: Vec<String> = report.mismatches.iter().map(ToString::to_string).collect();
        assert!(shown.is_empty(), "{}:\n{}", kind.name(), shown.join("\n"));
    }
}

#[test]
fn fixture_mismatches_are_reported_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let tick =
        std::fs::read_to_string(workspace().join("guests/validate/fixtures/sample/input.jsonl"))
            .unwrap();
    let first = tick.lines().next().unwrap();
    std::fs::write(
        dir.path().join("input.jsonl"),
        format!("{first}\n{first}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("expected.jsonl"),
        "{\"verdict\": \"accepted\"}\n{\"verdict\": \"rejected\", \"code\": \"crossed-book\"}\n",
    )
    .unwrap();
    let sandbox = sandbox(SandboxLimits::default());
    let validate = Arc::new(
        GuestComponent::load(
            &sandbox,
            StageKind::Validate,
            embedded_component(StageKind::Validate),
            "embedded",
        )
        .unwrap(),
    );
    let report = run_fixtures(sandbox, validate, &configs(), dir.path()).unwrap();
    assert_eq!(report.lines, 2);
    assert_eq!(report.mismatches.len(), 1);
    assert_eq!(report.mismatches[0].line, 2);
}

#[test]
fn a_component_of_another_world_is_refused() {
    let sandbox = sandbox(SandboxLimits::default());
    let err = GuestComponent::load(
        &sandbox,
        StageKind::Validate,
        embedded_component(StageKind::Enrich),
        "enrich.wasm",
    )
    .unwrap_err();
    assert!(matches!(err, GuestLoadError::WrongWorld { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("stockpipe:pipeline/validate@0.2.0"),
        "{err}"
    );
    let err = GuestComponent::load(&sandbox, StageKind::Route, b"\0asm not really", "junk.wasm")
        .unwrap_err();
    assert!(matches!(err, GuestLoadError::Compile { .. }), "{err}");
    assert!(err.to_string().contains("junk.wasm"), "{err}");
}

/// A component of the contract before 0.2.0 is refused with both versions named (the embedded
/// validate guest, its export renamed to 0.1.0's in place: a real component, of the other version).
#[test]
fn a_component_of_the_previous_contract_is_refused_naming_both_versions() {
    let sandbox = sandbox(SandboxLimits::default());
    let (now, before) = (
        b"stockpipe:pipeline/validate@0.2.0",
        b"stockpipe:pipeline/validate@0.1.0",
    );
    let mut bytes = embedded_component(StageKind::Validate).to_vec();
    let mut renamed = 0;
    for at in 0..bytes.len() - now.len() {
        if &bytes[at..at + now.len()] == now {
            bytes[at..at + now.len()].copy_from_slice(before);
            renamed += 1;
        }
    }
    assert!(renamed > 0, "the export's name is in the component");
    let err = GuestComponent::load(&sandbox, StageKind::Validate, &bytes, "old-validate.wasm")
        .unwrap_err();
    assert!(matches!(err, GuestLoadError::WrongVersion { .. }), "{err}");
    let text = err.to_string();
    for part in [
        "old-validate.wasm",
        "stockpipe:pipeline@0.1.0",
        "@0.2.0",
        "guest new",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
}

fn tick_with_token(token: u64) -> Tick {
    Tick {
        instrument_token: token,
        ..stockpipe_model::example::tick()
    }
}

fn hostile_chain(limits: SandboxLimits) -> WasmChain {
    let sandbox = sandbox(limits);
    let mut components = ChainComponents::embedded(&sandbox).unwrap();
    components.validate = hostile_component(&sandbox);
    WasmChain::new(sandbox, components, configs())
}

fn refusal_code(outcome: &StageOutcome) -> Option<&str> {
    match outcome {
        StageOutcome::Refused { refusal, .. } => Some(refusal.code.as_str()),
        StageOutcome::Accepted { .. } => None,
    }
}

#[test]
fn a_trap_or_exhausted_limit_fails_only_the_poison_tick() {
    let mut chain = hostile_chain(tight_limits());
    let ticks: Vec<Tick> = [1, 13, 2, 14, 3, 15, 4]
        .into_iter()
        .map(tick_with_token)
        .collect();
    let outcomes = chain.process(&ticks);
    let codes: Vec<Option<&str>> = outcomes.iter().map(refusal_code).collect();
    assert_eq!(
        codes,
        [
            None,
            Some("trap"),
            None,
            Some("deadline-exceeded"),
            None,
            Some("memory-exhausted"),
            None
        ],
        "{outcomes:#?}"
    );
    for outcome in &outcomes {
        if let StageOutcome::Refused {
            refusal,
            dead_letter_topic,
        } = outcome
        {
            assert_eq!(refusal.stage.as_str(), "validate");
            assert!(
                refusal
                    .guest_version
                    .as_deref()
                    .unwrap()
                    .starts_with("sha256:")
            );
            assert_eq!(dead_letter_topic, "stock-stream.dlq");
        }
    }
    // The chain goes on with fresh instances.
    let again = chain.process(&[tick_with_token(5), tick_with_token(6)]);
    assert!(
        again.iter().all(|o| refusal_code(o).is_none()),
        "{again:#?}"
    );
}

#[test]
fn fewer_outcomes_than_inputs_is_a_broken_batch_not_a_misaligned_result() {
    let mut chain = hostile_chain(tight_limits());
    let ticks: Vec<Tick> = [1, 16, 2].into_iter().map(tick_with_token).collect();
    let outcomes = chain.process(&ticks);
    let codes: Vec<Option<&str>> = outcomes.iter().map(refusal_code).collect();
    assert_eq!(
        codes,
        [None, Some("broken-contract"), None],
        "{outcomes:#?}"
    );
}

#[test]
fn guests_get_no_environment_files_or_network() {
    let mut chain = hostile_chain(tight_limits());
    let outcomes = chain.process(&[tick_with_token(17)]);
    let StageOutcome::Refused { refusal, .. } = &outcomes[0] else {
        panic!("{outcomes:?}")
    };
    // The guest reports what it could reach: every attempt must have failed.
    assert!(refusal.message.contains("env=Err("), "{}", refusal.message);
    assert!(refusal.message.contains("file=Err("), "{}", refusal.message);
    assert!(refusal.message.contains("net=Err("), "{}", refusal.message);
}

fn mixed_ticks() -> Vec<Tick> {
    let mut ticks = simulate(&SimulateOptions {
        instruments: 30,
        ticks: 3_000,
        seed: 9,
        ..Default::default()
    });
    for (i, t) in ticks.iter_mut().enumerate() {
        match i % 97 {
            1 => t.low = t.high.map(|h| h + 1.0),
            2 => t.last_price = f64::NAN,
            3 => t.depth_buy.swap(0, 1),
            4 => t.volume = Some(-1),
            5 => t.timestamp_us = 0,
            6 => t.depth_sell.clear(),
            _ => {}
        }
    }
    ticks
}

#[test]
fn wasm_chain_agrees_with_native_logic() {
    let sandbox = sandbox(SandboxLimits::default());
    let mut wasm = WasmChain::new(
        sandbox.clone(),
        ChainComponents::embedded(&sandbox).unwrap(),
        configs(),
    );
    let mut native = NativeChain { config: configs() };
    let ticks = mixed_ticks();
    let mut refused = 0;
    for batch in ticks.chunks(500) {
        let (w, n) = (wasm.process(batch), native.process(batch));
        assert_eq!(w.len(), batch.len());
        for (a, b) in w.iter().zip(&n) {
            match (a, b) {
                (StageOutcome::Accepted { .. }, StageOutcome::Accepted { .. }) => assert_eq!(a, b),
                (
                    StageOutcome::Refused { refusal: ra, .. },
                    StageOutcome::Refused { refusal: rb, .. },
                ) => {
                    refused += 1;
                    assert_eq!(
                        (ra.stage, &ra.code, &ra.message),
                        (rb.stage, &rb.code, &rb.message)
                    );
                }
                _ => panic!("wasm {a:?} vs native {b:?}"),
            }
        }
    }
    let broken = (0..ticks.len())
        .filter(|i| (1..=5).contains(&(i % 97)))
        .count();
    assert_eq!(refused, broken, "five of every 97 ticks are broken");
}

/// The reference sample of the original project (not committed here; CI has `shared/` beside the
/// clone). Every one of its 100 ticks must pass, through the components and natively alike.
#[test]
fn every_reference_sample_tick_passes() {
    let path = workspace().join("../shared/reference/stock_data_sample.json");
    let Ok(stockpipe::source::replay::Input { payloads, .. }) =
        stockpipe::source::replay::read_input(&path)
    else {
        eprintln!(
            "note: {} not found; checked against data/stock_data_sample.json only",
            path.display()
        );
        return;
    };
    assert_eq!(payloads.len(), 100);
    let ticks: Vec<Tick> = payloads
        .iter()
        .map(|p| stockpipe_model::json::decode_tick(p, 0).expect("every reference tick decodes"))
        .collect();
    let sandbox = sandbox(SandboxLimits::default());
    let mut wasm = WasmChain::new(
        sandbox.clone(),
        ChainComponents::embedded(&sandbox).unwrap(),
        configs(),
    );
    let outcomes = wasm.process(&ticks);
    let refused: Vec<_> = outcomes
        .iter()
        .filter(|o| refusal_code(o).is_some())
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
    assert_eq!(outcomes, NativeChain { config: configs() }.process(&ticks));
}

#[test]
fn fuel_stops_a_runaway_guest_deterministically() {
    // A deadline far away: only the fuel can stop the loop.
    let limits = SandboxLimits {
        call_deadline: std::time::Duration::from_secs(30),
        fuel_per_call: Some(50_000_000),
        ..crate::support::tight_limits()
    };
    let mut chain = hostile_chain(limits);
    let ticks: Vec<Tick> = [1, 14, 2].into_iter().map(tick_with_token).collect();
    let outcomes = chain.process(&ticks);
    let codes: Vec<Option<&str>> = outcomes.iter().map(refusal_code).collect();
    assert_eq!(codes, [None, Some("fuel-exhausted"), None], "{outcomes:#?}");
}

/// What `stockpipe simulate` makes, the shipped validate accepts: every tick of a long run.
#[test]
fn every_simulated_tick_passes_the_shipped_validate() {
    use stockpipe::source::simulate::{SimulateOptions, simulate};
    use stockpipe_guest_validate::logic::{ValidateConfig, validate_tick};
    let ticks = simulate(&SimulateOptions {
        instruments: 20,
        ticks: 5_000,
        seed: 3,
        ..Default::default()
    });
    for t in &ticks {
        validate_tick(&ValidateConfig::default(), &t.view())
            .unwrap_or_else(|r| panic!("{t:?}: {r:?}"));
    }
}
