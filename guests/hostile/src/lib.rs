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

#[cfg(target_arch = "wasm32")]
#[expect(
    unsafe_code,
    reason = "the canonical-ABI exports that wit-bindgen generates"
)]
mod bindings {
    wit_bindgen::generate!({ world: "validator", path: "../../wit" });

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

    export!(Hostile);
}
