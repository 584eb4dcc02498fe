//! The product stack's integrations, one folder each: they talk to the job queue and the
//! store, and never to the HTTP layer (their endpoints are thin handlers in `api`).
//!
//! - `stripe`: webhooks, event processing, dunning, usage metering.

pub mod stripe;
