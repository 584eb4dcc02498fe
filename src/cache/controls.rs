//! A request's cache controls: the header names, and their values parsed and checked
//! against the configuration (a malformed value is an error, never ignored).

use super::CacheConfig;

/// Request header: `on` (default), `off`, `no-read`, `no-write`, `refresh`.
pub const CACHE_HEADER: &str = "x-quartermaster-cache";
/// Request header: seconds the stored answer lives.
pub const TTL_HEADER: &str = "x-quartermaster-cache-ttl";
/// Request header: the similarity a semantic hit needs, 0..=1.
pub const THRESHOLD_HEADER: &str = "x-quartermaster-cache-threshold";
/// Request header: comma-separated tags for the stored answer (invalidation by tag).
pub const TAGS_HEADER: &str = "x-quartermaster-cache-tags";
/// Response headers (with [`CACHE_HEADER`]: `hit`, `miss` or `bypass`).
pub const KIND_HEADER: &str = "x-quartermaster-cache-kind";
pub const SIMILARITY_HEADER: &str = "x-quartermaster-cache-similarity";
pub const ENTRY_HEADER: &str = "x-quartermaster-cache-entry";

/// What the client asked of the cache for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Controls {
    pub read: bool,
    pub write: bool,
    pub ttl_secs: u64,
    pub threshold: f32,
    pub tags: Vec<String>,
}

/// The cache's request headers as sent (`None`: absent).
#[derive(Debug, Clone, Default)]
pub struct ControlText {
    pub mode: Option<String>,
    pub ttl: Option<String>,
    pub threshold: Option<String>,
    pub tags: Option<String>,
}

/// A malformed cache control: the header and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("header {header}: {why}")]
pub struct ControlError {
    pub header: &'static str,
    pub why: String,
}

impl Controls {
    /// Reads the request's cache headers; a malformed value is an error, never silently
    /// ignored.
    pub fn parse(text: &ControlText, config: &CacheConfig) -> Result<Self, ControlError> {
        let bad = |header: &'static str, why: &str| ControlError {
            header,
            why: why.to_string(),
        };
        fn trimmed(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim)
        }
        let (read, write) = match trimmed(&text.mode).map(str::to_ascii_lowercase).as_deref() {
            None | Some("on") | Some("") => (true, true),
            Some("off") => (false, false),
            Some("no-read") => (false, true),
            Some("no-write") => (true, false),
            Some("refresh") => (false, true),
            Some(_) => {
                return Err(bad(
                    CACHE_HEADER,
                    "must be one of on, off, no-read, no-write, refresh",
                ));
            }
        };
        let ttl_secs = match trimmed(&text.ttl) {
            None => config.default_ttl_secs,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n >= 1 && n <= config.max_ttl_secs => n,
                _ => {
                    return Err(bad(
                        TTL_HEADER,
                        &format!(
                            "must be whole seconds between 1 and {}",
                            config.max_ttl_secs
                        ),
                    ));
                }
            },
        };
        let threshold = match trimmed(&text.threshold) {
            None => config.effective_threshold(),
            Some(v) => match v.parse::<f32>() {
                Ok(t) if (0.0..=1.0).contains(&t) => config.floored(t),
                _ => return Err(bad(THRESHOLD_HEADER, "must be a number between 0 and 1")),
            },
        };
        let tags = match trimmed(&text.tags) {
            None => Vec::new(),
            Some(v) => parse_tags(v).map_err(|why| bad(TAGS_HEADER, &why))?,
        };
        Ok(Self {
            read,
            write,
            ttl_secs,
            threshold,
            tags,
        })
    }
}

/// Most tags on one entry, and in one invalidation request.
pub const MAX_TAGS: usize = 32;

/// Tags: comma-separated, each 1..=128 characters, at most [`MAX_TAGS`].
pub fn parse_tags(v: &str) -> Result<Vec<String>, String> {
    let mut tags: Vec<String> = Vec::new();
    for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if t.len() > 128 {
            return Err("a tag is longer than 128 characters".into());
        }
        if !tags.iter().any(|x| x == t) {
            tags.push(t.to_string());
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(format!("at most {MAX_TAGS} tags"));
    }
    Ok(tags)
}
