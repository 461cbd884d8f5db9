//! The tools around the pipeline, each behind a subcommand: none of them is on a tick's path.
//!
//! - [`bench`] and [`bench_pipeline`]: performance figures (`stockpipe bench …`).
//! - [`guest_test`]: a component against fixture cases (`stockpipe guest test`).
//! - [`upload`]: files into the lake as NDJSON (`stockpipe upload`).
//! - [`bigquery`]: the sql/ statements, rendered and submitted (`stockpipe bq`).
//! - [`kibana`]: the dashboard's saved objects and their import (`stockpipe kibana`).
//! - [`ml`]: the BigQuery ML models computed offline from the lake (`stockpipe ml`).

pub mod bench;
pub mod bench_pipeline;
pub mod bigquery;
pub mod guest_test;
pub mod kibana;
pub mod ml;
pub mod upload;
