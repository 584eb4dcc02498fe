//! Quartermaster: an LLM gateway. Chat requests come in through OpenAI-compatible doors,
//! are answered from the semantic cache when that is safe, otherwise grounded, routed by tier
//! and streamed back; every request is accounted for.
//!
//! Dependencies point one way, from the top of this list down (README's Layout lists every
//! file, `python3 scripts/layout.py` prints it):
//!
//! - The process: [`cli`] (the command line), [`server`] (building the app, serving it,
//!   background work, shutdown).
//! - HTTP: [`api`] (the doors: decode a request, call a domain module, encode the answer;
//!   the error envelope; middleware).
//! - Settings: [`config`] (every section typed and validated, hot reload). It gathers the
//!   domain's own config types; no domain module reads it.
//! - The pipeline: [`chat`] (one chat request through cache, grounding, routing, budgets,
//!   upstreams and the answer, as protocol-neutral events).
//! - The domain: [`route`] (tiers, the classifier, retries, failover, breakers),
//!   [`usage`] (the ledger, budgets), [`cache`] (exact and semantic), [`rag`] (documents,
//!   retrieval), [`providers`] (upstreams behind one trait), [`integrations`] (Stripe, ...),
//!   [`jobs`] (the durable queue), [`idempotency`], [`auth`] (keys, tenants, end users'
//!   tokens and sessions, operator roles), [`audit`] (the append-only audit log),
//!   [`notify`] (notifications: the inbox, live streams, templates, the email outbox).
//! - Foundations: [`embed`] (the local embedder), [`index`] (the HNSW graph), [`store`]
//!   (SQLite or PostgreSQL; every query), [`error`] (the one table of error codes),
//!   [`types`] (the OpenAI wire format), [`clock`] (the time now, UTC dates), [`telemetry`]
//!   (logs, metrics).

pub mod api;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod config;
pub mod embed;
pub mod error;
pub mod idempotency;
pub mod index;
pub mod integrations;
pub mod jobs;
pub mod notify;
pub mod providers;
pub mod rag;
pub mod route;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod types;
pub mod usage;

/// Installs rustls' ring provider for every HTTP client in the process (reqwest is built
/// without a default provider). Idempotent; called wherever a client is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
