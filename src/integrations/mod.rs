//! The product stack's integrations, one folder each: they talk to the job queue and the
//! store, and never to the HTTP layer (their endpoints are thin handlers in `api`).
//!
//! - `stripe`: webhooks, event processing, dunning, usage metering.
//! - `identity`: identity providers' webhooks (Clerk, Supabase) and the user deletion cascade.
//! - `signatures`: the webhook signature schemes shared by several senders.

pub mod identity;
pub mod signatures;
pub mod stripe;
