//! The host's integration tests, in one binary (it links once).

mod admin_api;
mod alerts;
mod backfill;
mod bars;
mod bigquery;
mod data_path;
mod e2e;
mod elasticsearch;
mod emulators;
mod es_production;
mod failover;
mod feeds;
mod guest_kit;
mod guests;
mod hostile_input;
mod kafka_security;
mod kibana;
mod lake_schema;
mod layout;
mod ml;
mod numbers;
mod observability;
mod shutdown;
mod sinks;
mod support;
mod swap;
