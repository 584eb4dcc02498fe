//! Quartermaster: an LLM gateway. OpenAI-compatible chat in, tenants and keys checked,
//! routed to a provider, streamed back as SSE, every request accounted for.
//!
//! Layout (one module per concept): `config` (typed settings), `api` (HTTP surface),
//! `auth` (keys, tenants), `providers` (upstreams behind one trait), `store` (SQLite or
//! PostgreSQL), `server` (building, serving, shutdown), `telemetry` (logs, metrics).

pub mod api;
pub mod auth;
pub mod billing;
pub mod budget;
pub mod cache;
pub mod config;
pub mod embed;
pub mod error;
pub mod jobs;
pub mod providers;
pub mod rag;
pub mod route;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod types;

/// Installs rustls' ring provider for every HTTP client in the process (reqwest is built
/// without a default provider). Idempotent; called wherever a client is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
