//! The integration suite, one binary (each file in tests/ would be a binary linking the
//! whole crate): the HTTP surface, the cache, retrieval, routing, billing, the local model,
//! PostgreSQL, the real binary killed mid-write, and the official SDKs as clients.
//! `tests/hardening` is the other binary.

#[path = "../common/mod.rs"]
mod common;

mod analytics;
mod anthropic_upstream;
mod api;
mod billing;
mod cache;
mod cache_kill;
mod cache_qdrant;
mod cli;
mod cms;
mod comms;
mod comms_kill;
mod console;
mod email;
mod embeddings;
mod gateway;
mod golden;
mod identity;
mod jobs_kill;
mod js_clients;
mod local_model;
mod messages;
mod openapi;
mod parser_props;
mod postgres;
pub mod python_sdk;
mod rag;
mod rag_cli;
mod reload_sighup;
mod replicas;
mod responses;
mod routing;
mod tracing;
mod ui_chat;
mod warehouse;
