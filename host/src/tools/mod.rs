//! The tools around the pipeline, each behind a subcommand: none of them is on a tick's path.
//!
//! - [`bench`] and [`bench_pipeline`]: performance figures (`stockpipe bench …`).
//! - The guest author's kit (`stockpipe guest …`): [`guest_new`] a standalone guest crate,
//!   [`guest_test`] a component against fixture cases (or recording them), [`guest_diff`] two
//!   versions over the lake's history ([`alert_diff`]: two alert rule sets or guests),
//!   [`guest_promote`] a candidate handed to a running host.
//! - [`check`]: every dependency the configuration names, tried (`stockpipe check`).
//! - [`input_check`]: how a file's messages are read, tick by tick (`stockpipe input check`).
//! - [`upload`]: files into the lake as NDJSON (`stockpipe upload`).
//! - [`bigquery`]: the sql/ statements, rendered and submitted (`stockpipe bq`).
//! - [`kibana`]: the dashboard's saved objects and their import (`stockpipe kibana`).
//! - [`ml`]: the BigQuery ML models computed offline from the lake (`stockpipe ml`).

pub mod alert_diff;
pub mod bench;
pub mod bench_pipeline;
mod bench_stateful;
pub mod bigquery;
pub mod check;
pub mod guest_diff;
pub mod guest_new;
pub mod guest_promote;
pub mod guest_test;
pub mod input_check;
pub mod kibana;
pub mod ml;
mod timing;
pub mod upload;
