//! The jobs a CMS delivery starts: applying the document's latest revision to the tenant's
//! retrieval store (re-ingested, or deleted; the cache entries grounded on its old text go
//! with it), then the frontend's revalidation. Each retried with backoff, dead-lettered at
//! the end.
//!
//! Convergence: a job applies the latest revision stored for its document, not its own
//! delivery's, so deliveries arriving out of order, twice, or whose jobs run at once all
//! leave the newest text in place.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{CmsConfig, CmsSource, at, fill_path, text_of};
use crate::jobs::{JobError, JobHandler, JobQueue, JobRow, NewJob};
use crate::rag::{Format, IngestDoc, Rag};
use crate::store::{Store, on_pool};

pub const JOB_REVALIDATE: &str = "cms.revalidate";

pub struct ApplyJob {
    pub store: Store,
    pub rag: Option<Arc<Rag>>,
    pub config: CmsConfig,
    pub queue: JobQueue,
}

#[async_trait::async_trait]
impl JobHandler for ApplyJob {
    async fn run(&self, job: &JobRow) -> Result<(), JobError> {
        let r: Value = job.parse_payload()?;
        let event = r["event"].as_str().unwrap_or_default().to_string();
        let rag = self.rag.as_ref().ok_or_else(|| {
            JobError::Permanent("retrieval is disabled ([rag] enabled = false)".into())
        })?;
        let named: Option<(String, String, String)> = on_pool!(&self.store, p => sqlx::query_as(
            "SELECT source, tenant_id, doc_id FROM cms_events WHERE id = $1").bind(&event).fetch_optional(p).await)?;
        let Some((source_name, tenant, doc_id)) = named else {
            return Err(JobError::Permanent(format!("no stored delivery {event}")));
        };
        let source = self.config.sources.get(&source_name).ok_or_else(|| {
            JobError::Permanent(format!("no CMS source `{source_name}` configured"))
        })?;
        let target = Target {
            rag,
            name: &source_name,
            source,
            tenant: &tenant,
            doc_id: &doc_id,
        };
        // Apply the latest revision; if a newer one came in while this ran (another job may
        // have applied it before this one finished), apply that one too.
        let mut applied = self.apply(&target, self.latest(&target).await?).await?;
        for _ in 0..5 {
            let newest = self.latest(&target).await?;
            if newest.0 == applied.id {
                break;
            }
            applied = self.apply(&target, newest).await?;
        }
        let Applied {
            revision,
            op,
            doc,
            outcome,
            ..
        } = applied;
        metrics::counter!("qm_cms_documents_applied_total", "operation" => op.clone()).increment(1);
        tracing::info!(source = %source_name, document = %doc_id, revision = %revision, outcome = %outcome, "CMS document applied");
        // The tenant hears of it, at low priority (in the app, and in the next digest).
        let title = at(&doc, &source.title_field)
            .and_then(Value::as_str)
            .unwrap_or(&doc_id)
            .to_string();
        let verb = if op == "delete" { "removed" } else { "updated" };
        let notice = crate::notify::Notice::render(
            "notice",
            &tenant,
            format!("cms:{source_name}:{doc_id}:{revision}:{op}"),
            json!({"subject": format!("\"{title}\" {verb} from {source_name}"),
                   "body": format!("The assistant now answers from revision {revision} of {doc_id}: {outcome}.")}),
        )
        .map_err(|e| JobError::Permanent(e.to_string()))?
        .priority(crate::notify::Priority::Low);
        crate::notify::send(&self.store, &self.queue, &[notice]).await?;
        if self.config.revalidate.is_some() {
            let path = source
                .path_template
                .as_deref()
                .and_then(|t| fill_path(t, &doc));
            self.queue
                .enqueue(
                    NewJob::new(
                        JOB_REVALIDATE,
                        &json!({"tags": [format!("doc:{doc_id}"), format!("cms:{source_name}")], "paths": path.into_iter().collect::<Vec<_>>()}),
                    )
                    .dedupe(format!("revalidate:{source_name}:{doc_id}:{revision}:{op}")),
                )
                .await?;
        }
        Ok(())
    }
}

/// What one application did.
struct Applied {
    id: String,
    revision: String,
    op: String,
    doc: Value,
    outcome: String,
}

/// The document a job applies, and where.
struct Target<'a> {
    rag: &'a Rag,
    name: &'a str,
    source: &'a CmsSource,
    tenant: &'a str,
    doc_id: &'a str,
}

/// A stored delivery: (id, revision, operation, payload).
type Delivery = (String, String, String, String);

impl ApplyJob {
    /// The newest delivery of a document. At equal revisions a delete wins (Sanity sends a
    /// deleted document as it last was), then the later one.
    async fn latest(&self, t: &Target<'_>) -> Result<Delivery, JobError> {
        Ok(on_pool!(&self.store, p => sqlx::query_as(
            "SELECT id, revision, operation, payload FROM cms_events \
             WHERE source = $1 AND tenant_id = $2 AND doc_id = $3 \
             ORDER BY revision DESC, CASE WHEN operation = 'delete' THEN 1 ELSE 0 END DESC, received_at DESC, id DESC LIMIT 1")
            .bind(t.name).bind(t.tenant).bind(t.doc_id).fetch_one(p).await)?)
    }

    /// Applies one delivery to retrieval.
    async fn apply(&self, t: &Target<'_>, d: Delivery) -> Result<Applied, JobError> {
        let (id, revision, op, payload) = d;
        let body: Value = serde_json::from_str(&payload)
            .map_err(|e| JobError::Permanent(format!("stored delivery is not JSON: {e}")))?;
        let doc = at(&body, &t.source.document_path)
            .cloned()
            .unwrap_or(Value::Null);
        let outcome = if op == "delete" {
            let deleted = t.rag.delete(t.tenant, t.doc_id).await.map_err(retry)?;
            format!("deleted: {deleted}")
        } else {
            let ingest = ingest_doc(t.name, t.source, t.doc_id, &doc);
            match t.rag.ingest(t.tenant, ingest).await {
                Ok(o) => format!("{:?}", o.status).to_lowercase(),
                // A document with no text is not searchable: what was stored goes.
                Err(crate::rag::RagError::Extract(crate::rag::ExtractError::Empty)) => {
                    let _ = t.rag.delete(t.tenant, t.doc_id).await.map_err(retry)?;
                    "empty: removed".into()
                }
                Err(e @ crate::rag::RagError::Invalid(_)) => {
                    return Err(JobError::Permanent(e.to_string()));
                }
                Err(e) => return Err(retry(e)),
            }
        };
        Ok(Applied {
            id,
            revision,
            op,
            doc,
            outcome,
        })
    }
}

fn retry(e: impl std::fmt::Display) -> JobError {
    JobError::Retry(e.to_string())
}

/// The document as retrieval takes it: title, text (a string or Portable Text), and the
/// configured metadata fields (with the CMS's name and the document's revision).
fn ingest_doc(source_name: &str, source: &CmsSource, id: &str, doc: &Value) -> IngestDoc {
    let mut metadata = serde_json::Map::new();
    for f in &source.metadata_fields {
        if let Some(v) = at(doc, f) {
            metadata.insert(f.clone(), v.clone());
        }
    }
    metadata.insert("cms".into(), json!(source_name));
    if let Some(rev) = at(doc, &source.revision_field) {
        metadata.insert("revision".into(), rev.clone());
    }
    IngestDoc {
        id: id.to_string(),
        title: at(doc, &source.title_field)
            .and_then(Value::as_str)
            .map(str::to_string),
        text: at(doc, &source.text_field).map(text_of).unwrap_or_default(),
        format: Format::Markdown,
        source: Some(format!("cms:{source_name}")),
        metadata,
    }
}

/// Tells the frontend to revalidate: `POST {url}` `{"tags", "paths"}` with its secret.
pub struct RevalidateJob {
    pub config: CmsConfig,
    pub http: reqwest::Client,
}

#[async_trait::async_trait]
impl JobHandler for RevalidateJob {
    async fn run(&self, job: &JobRow) -> Result<(), JobError> {
        let Some(target) = &self.config.revalidate else {
            return Ok(());
        };
        let body: Value = job.parse_payload()?;
        let mut req = self
            .http
            .post(&target.url)
            .timeout(Duration::from_millis(target.timeout_ms))
            .json(&body);
        if let Some(secret) = target.secret() {
            req = req.bearer_auth(secret);
        }
        let r = req.send().await.map_err(|e| retry(e.without_url()))?;
        let status = r.status();
        if status.is_success() {
            metrics::counter!("qm_cms_revalidations_total").increment(1);
            Ok(())
        } else if status.is_client_error() && status.as_u16() != 429 && status.as_u16() != 408 {
            Err(JobError::Permanent(format!(
                "the revalidation route answered {status}"
            )))
        } else {
            Err(JobError::Retry(format!(
                "the revalidation route answered {status}"
            )))
        }
    }
}
