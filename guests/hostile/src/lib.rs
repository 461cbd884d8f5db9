//! A validate guest for the host's tests, built by host/build.rs and never embedded or shipped.
//! It accepts every tick except those whose `instrument_token` picks a misbehaviour:
//!
//! | token | behaviour |
//! |---|---|
//! | 13 | panics (a trap) |
//! | 14 | loops forever (the epoch deadline must stop it) |
//! | 15 | allocates 1 GiB (the memory cap must stop it) |
//! | 16 | returns one outcome fewer than it was given (a broken contract) |
//! | 17 | reads an environment variable and a file, and rejects the tick with what it found |
//!
//! It also exports the aggregate stage, as a version that cannot read any state: importing one is
//! refused, it closes no bars, and instrument 13 traps there too.

#[cfg(target_arch = "wasm32")]
#[expect(
    unsafe_code,
    reason = "the canonical-ABI exports that wit-bindgen generates"
)]
mod bindings {
    wit_bindgen::generate!({
        inline: "package stockpipe:hostile;
                 world hostile {
                     include stockpipe:pipeline/validator@0.2.0;
                     include stockpipe:pipeline/aggregator@0.2.0;
                 }",
        path: "../../wit",
        world: "stockpipe:hostile/hostile",
        generate_all,
    });

    use exports::stockpipe::pipeline::aggregate;
    use exports::stockpipe::pipeline::validate::{Guest, ValidateConfig};
    use stockpipe::pipeline::types::{ReasonCode, Rejection, TickBatch};

    struct Hostile;

    impl Guest for Hostile {
        fn validate_batch(_config: ValidateConfig, ticks: TickBatch) -> Vec<Option<Rejection>> {
            let mut out = Vec::with_capacity(ticks.instrument_token.len());
            for &token in &ticks.instrument_token {
                match token {
                    13 => panic!("hostile guest: poison tick"),
                    14 => loop {
                        std::hint::black_box(&out);
                    },
                    15 => {
                        let bomb = vec![1u8; 1 << 30];
                        std::hint::black_box(&bomb);
                    }
                    16 => {}
                    17 => {
                        let env = std::env::var("HOME").map_err(|e| e.to_string());
                        let file =
                            std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string());
                        let net = std::net::TcpStream::connect("127.0.0.1:9")
                            .map(|_| ())
                            .map_err(|e| e.to_string());
                        out.push(Some(Rejection {
                            code: ReasonCode::Other,
                            message: format!(
                                "env={env:?} file={:?} net={net:?}",
                                file.map(|f| f.len())
                            ),
                        }));
                        continue;
                    }
                    _ => {}
                }
                if token != 16 {
                    out.push(None);
                }
            }
            out
        }
    }

    impl aggregate::Guest for Hostile {
        fn aggregate_batch(
            _config: aggregate::AggregateConfig,
            ticks: aggregate::AggregateInput,
        ) -> aggregate::AggregateOutput {
            assert!(
                !ticks.instrument_token.contains(&13),
                "hostile guest: poison tick"
            );
            aggregate::AggregateOutput {
                late: Vec::new(),
                bars: aggregate::BarBatch {
                    partition: Vec::new(),
                    instrument_token: Vec::new(),
                    start_us: Vec::new(),
                    open: Vec::new(),
                    high: Vec::new(),
                    low: Vec::new(),
                    close: Vec::new(),
                    traded_quantity: Vec::new(),
                    tick_count: Vec::new(),
                    vwap: Vec::new(),
                    last_mid_price: Vec::new(),
                    last_spread: Vec::new(),
                    log_return: Vec::new(),
                    volatility: Vec::new(),
                    closed_by: Vec::new(),
                },
            }
        }

        fn export_state(_partition: i32) -> Vec<u8> {
            Vec::new()
        }

        fn import_state(_partition: i32, state: Vec<u8>) -> Result<(), String> {
            if state.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "hostile guest: reads no state ({} bytes offered)",
                    state.len()
                ))
            }
        }

        fn drop_state(_partition: i32) {}
    }

    export!(Hostile);
}
