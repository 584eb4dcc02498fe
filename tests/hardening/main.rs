//! What a hostile tenant, a full disk, a database outage and a noisy neighbour do to the
//! gateway: each module reproduces one way it was taken down or lost data, against the
//! real binary where only a process can show it.

#[path = "../common/mod.rs"]
mod common;

mod disk_full;
mod fairness;
mod http_limits;
mod outage;
mod pdf;
mod retrieval;
