//! The product stack's integrations, one folder each: they talk to the job queue and the
//! store, and never to the HTTP layer (their endpoints are thin handlers in `api`).
//!
//! - `stripe`: webhooks, event processing, dunning, usage metering, starting payments.
//! - `cms`: headless CMS webhooks into retrieval, the cache and the site's revalidation.
//! - `analytics`: server-side AI analytics (PostHog, or a Segment-style collector).
//! - `warehouse`: the usage facts as day-partitioned Parquet for a warehouse loader.
//! - `email`: outbound email (Resend, Postmark, SendGrid) from the outbox, delivery
//!   webhooks and the suppression list, digests.
//! - `cal`: Cal.com booking webhooks.
//! - `identity`: identity providers' webhooks (Clerk, Supabase) and the user deletion cascade.
//! - `signatures`: the webhook signature schemes shared by several senders.

pub mod analytics;
pub mod cal;
pub mod cms;
pub mod email;
pub mod identity;
pub mod signatures;
pub mod stripe;
pub mod warehouse;
