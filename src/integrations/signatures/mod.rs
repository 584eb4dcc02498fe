//! Webhook signature schemes, one implementation per family, shared by every sender of it:
//! each verifies the raw body before anything parses it, compares in constant time, and
//! refuses stale timestamps.
//!
//! - `standard_webhooks`: Standard Webhooks / Svix (Clerk, Supabase, Resend).
//! - `timestamped_hmac`: `t=...,v1=...` in one header (Sanity).

pub mod standard_webhooks;
pub mod timestamped_hmac;
