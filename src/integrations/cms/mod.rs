//! Headless CMS publishes into retrieval, the cache and the site. A CMS's webhook
//! (`POST /webhooks/cms/NAME`, and `POST /webhooks/sanity` for the source named `sanity`)
//! is verified on its raw body (`webhook.rs`), stored once by its delivery id with a job in
//! the same transaction, and acknowledged. The job (`sync.rs`) applies the latest revision
//! of the document: re-ingests it into the tenant's retrieval store (which removes the cached
//! answers grounded on the old text) or deletes it, then a second job tells the frontend to
//! revalidate (`revalidateTag` / `revalidatePath` through the Next.js app's route). A
//! delivery older than the revision already applied changes nothing, so out-of-order and
//! duplicate deliveries converge on the latest.
//!
//! Senders: Sanity (`sanity-webhook-signature`, as `@sanity/webhook` signs), Contentful
//! (`POST /webhooks/contentful`: its signed requests, as `@contentful/node-apps-toolkit`
//! signs; rich text read as text), and any CMS that can send a shared secret in a header
//! (Strapi, Payload, or Contentful's secret header).

pub mod sync;
pub mod webhook;

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

/// `[cms]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CmsConfig {
    pub sources: BTreeMap<String, CmsSource>,
    /// The frontend's revalidation route.
    pub revalidate: Option<Revalidate>,
}

/// How a source signs its deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `sanity-webhook-signature: t=<ms>,v1=<base64url HMAC>`.
    Sanity,
    /// The secret itself in `secret_header` (Strapi, Payload, Contentful), compared in
    /// constant time.
    SharedSecret,
    /// Contentful's signed requests (`x-contentful-signature` over the canonical request).
    Contentful,
}

/// `[cms.sources.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CmsSource {
    pub kind: Kind,
    #[serde(default)]
    pub secrets: Vec<SecretString>,
    /// Or the variable holding them, comma-separated.
    #[serde(default)]
    pub secrets_env: Option<String>,
    /// `shared_secret`: the header carrying it.
    #[serde(default = "default_secret_header")]
    pub secret_header: String,
    /// The tenant whose retrieval store the documents go to.
    pub tenant: String,
    /// Deliveries signed longer ago than this are refused (replays).
    #[serde(default = "default_tolerance")]
    pub tolerance_secs: i64,
    /// Where the document is in the body (a dotted path; empty: the body is the document,
    /// as a Sanity projection sends it; `entry` for Strapi, `doc` for Payload).
    #[serde(default)]
    pub document_path: String,
    /// Dotted paths into the document.
    #[serde(default = "default_id_field")]
    pub id_field: String,
    #[serde(default = "default_title_field")]
    pub title_field: String,
    /// A string, or Portable Text blocks (Sanity's rich text), whose text is taken.
    #[serde(default = "default_text_field")]
    pub text_field: String,
    /// What orders revisions (an RFC 3339 time or a number): older deliveries are ignored.
    #[serde(default = "default_revision_field")]
    pub revision_field: String,
    /// Copied into the document's metadata.
    #[serde(default)]
    pub metadata_fields: Vec<String>,
    /// The path the site shows the document at, e.g. `/blog/{slug.current}`; revalidated.
    #[serde(default)]
    pub path_template: Option<String>,
}

fn default_secret_header() -> String {
    "x-webhook-secret".into()
}
fn default_tolerance() -> i64 {
    300
}
fn default_id_field() -> String {
    "_id".into()
}
fn default_title_field() -> String {
    "title".into()
}
fn default_text_field() -> String {
    "body".into()
}
fn default_revision_field() -> String {
    "_updatedAt".into()
}

/// `[cms.revalidate]`: the Next.js app's revalidation route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revalidate {
    /// E.g. `https://www.example.com/api/revalidate`: POSTed `{"tags": [...], "paths": [...]}`.
    pub url: String,
    /// The variable holding the route's secret (sent as `Authorization: Bearer`).
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret: Option<SecretString>,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_timeout() -> u64 {
    5000
}

impl Revalidate {
    pub fn secret(&self) -> Option<String> {
        self.secret
            .as_ref()
            .map(|s| s.expose_secret().to_string())
            .or_else(|| self.secret_env.as_ref().and_then(|v| std::env::var(v).ok()))
    }
}

impl CmsSource {
    /// The secrets, configured and from the environment.
    pub fn secrets(&self) -> Vec<Vec<u8>> {
        crate::integrations::signatures::secret_texts(&self.secrets, self.secrets_env.as_deref())
            .into_iter()
            .map(String::into_bytes)
            .collect()
    }
}

/// A dotted path into JSON.
pub fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(v);
    }
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// Contentful rich text (`nodeType: document`): its text nodes, paragraphs joined by blank
/// lines, headings as Markdown headings.
fn rich_text(node: &Value, out: &mut Vec<String>) {
    let kind = node
        .get("nodeType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let inline = |n: &Value| -> String {
        fn walk(n: &Value, s: &mut String) {
            if let Some(v) = n.get("value").and_then(Value::as_str) {
                s.push_str(v);
            }
            for c in n
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                walk(c, s);
            }
        }
        let mut s = String::new();
        walk(n, &mut s);
        s
    };
    match kind {
        "paragraph" | "blockquote" => out.push(inline(node)),
        h if h.starts_with("heading-") => {
            let level: usize = h[8..].parse().unwrap_or(1);
            out.push(format!(
                "{} {}",
                "#".repeat(level.clamp(1, 6)),
                inline(node)
            ));
        }
        "list-item" => out.push(format!("- {}", inline(node))),
        _ => {
            for c in node
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                rich_text(c, out);
            }
        }
    }
}

/// A field's text: a string, the spans of Portable Text blocks, or Contentful rich text
/// (paragraphs joined by blank lines; a heading becomes a Markdown heading so chunking keeps
/// sections).
pub fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) if o.get("nodeType").and_then(Value::as_str) == Some("document") => {
            let mut parts = vec![];
            rich_text(v, &mut parts);
            parts.retain(|p| !p.trim().is_empty());
            parts.join("\n\n")
        }
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| {
                if b.get("_type").and_then(Value::as_str) != Some("block") {
                    return b.as_str().map(str::to_string);
                }
                let text: String = b
                    .get("children")?
                    .as_array()?
                    .iter()
                    .filter_map(|c| c.get("text").and_then(Value::as_str))
                    .collect();
                let prefix = match b.get("style").and_then(Value::as_str) {
                    Some("h1") => "# ",
                    Some("h2") => "## ",
                    Some("h3") => "### ",
                    _ => "",
                };
                Some(format!("{prefix}{text}"))
            })
            .collect::<Vec<_>>()
            .join("\n\n"),
        _ => String::new(),
    }
}

/// A revision as a sortable string: numbers left-padded, times as they are (RFC 3339 in
/// UTC sorts as text).
pub fn revision_key(v: Option<&Value>) -> String {
    match v {
        Some(Value::Number(n)) => format!("{:020}", n.as_f64().unwrap_or(0.0) as u64),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// The site path of a document from a template such as `/blog/{slug.current}`.
pub fn fill_path(template: &str, doc: &Value) -> Option<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}')? + open;
        let field = &rest[open + 1..close];
        let value = at(doc, field)?;
        out.push_str(&match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn portable_text_paths_and_revisions() {
        let body = json!([
            {"_type": "block", "style": "h2", "children": [{"_type": "span", "text": "Refunds"}]},
            {"_type": "block", "style": "normal", "children": [{"text": "Within "}, {"text": "30 days."}]},
            {"_type": "image", "asset": {}}
        ]);
        assert_eq!(text_of(&body), "## Refunds\n\nWithin 30 days.");
        assert_eq!(text_of(&json!("plain")), "plain");
        let rich = json!({"nodeType": "document", "content": [
            {"nodeType": "heading-2", "content": [{"nodeType": "text", "value": "Refunds"}]},
            {"nodeType": "paragraph", "content": [{"nodeType": "text", "value": "Within "},
                {"nodeType": "hyperlink", "content": [{"nodeType": "text", "value": "30 days"}]}]}]});
        assert_eq!(text_of(&rich), "## Refunds\n\nWithin 30 days");
        let doc = json!({"slug": {"current": "refunds"}, "n": 3});
        assert_eq!(
            fill_path("/blog/{slug.current}", &doc).as_deref(),
            Some("/blog/refunds")
        );
        assert_eq!(fill_path("/x/{missing}", &doc), None);
        assert!(revision_key(Some(&json!(10))) > revision_key(Some(&json!(9))));
        assert!(
            revision_key(Some(&json!("2026-12-06T10:00:01Z")))
                > revision_key(Some(&json!("2026-12-06T10:00:00Z")))
        );
    }
}
