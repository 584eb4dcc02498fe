//! The semantic cache's index in Qdrant (gRPC, qdrant-client), shared by every gateway
//! replica. One collection; each point carries its tenant, fingerprint and entry id as
//! payload, and every search filters on tenant and fingerprint inside Qdrant. Points are
//! really deleted (no tombstones needed).

use std::time::Duration;

use qdrant_client::qdrant::{
    Condition, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePointsBuilder,
    Distance, FieldType, Filter, PointId, PointStruct, PointsIdsList, QueryPointsBuilder,
    UpsertPointsBuilder, VectorParamsBuilder,
};
use qdrant_client::{Payload, Qdrant};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::backend::{IndexError, VectorIndex};
use crate::index::Candidate;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QdrantConfig {
    /// gRPC URL, e.g. `http://127.0.0.1:6334`.
    pub url: String,
    pub collection: String,
    /// Environment variable holding the API key, if the server wants one.
    pub api_key_env: Option<String>,
    /// Vector size (the embedder's dimensions).
    pub dimensions: u64,
    pub timeout_ms: u64,
}

impl Default for QdrantConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            collection: "quartermaster_cache".into(),
            api_key_env: Some("QDRANT_API_KEY".into()),
            dimensions: 384,
            timeout_ms: 2000,
        }
    }
}

pub const TENANT_FIELD: &str = "tenant";
pub const FINGERPRINT_FIELD: &str = "fp";
pub const ENTRY_FIELD: &str = "entry";

/// Qdrant ids are UUIDs or integers; entry ids are `ce_` + a UUID's 32 hex digits, which map
/// to that UUID. Any other id maps to a UUID made from its SHA-256 (stable, collision-free
/// in practice).
pub fn point_uuid(entry_id: &str) -> String {
    let hex32 = entry_id
        .strip_prefix("ce_")
        .filter(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| hex::encode(&Sha256::digest(entry_id.as_bytes())[..16]));
    format!(
        "{}-{}-{}-{}-{}",
        &hex32[0..8],
        &hex32[8..12],
        &hex32[12..16],
        &hex32[16..20],
        &hex32[20..32]
    )
}

/// The payload stored with each point.
pub fn payload_json(tenant: &str, entry_id: &str, fingerprint: &str) -> serde_json::Value {
    json!({TENANT_FIELD: tenant, FINGERPRINT_FIELD: fingerprint, ENTRY_FIELD: entry_id})
}

/// The filter every search runs with: this tenant, this fingerprint.
pub fn search_filter(tenant: &str, fingerprint: &str) -> Filter {
    Filter::must([
        Condition::matches(TENANT_FIELD, tenant.to_string()),
        Condition::matches(FINGERPRINT_FIELD, fingerprint.to_string()),
    ])
}

/// Cosine collections score by cosine similarity: the score is the similarity. The payload's
/// entry id is authoritative; a point without one is not ours.
pub fn candidate(entry: Option<&str>, score: f32) -> Option<Candidate> {
    Some(Candidate {
        entry_id: entry?.to_string(),
        similarity: score,
    })
}

pub struct QdrantIndex {
    client: Qdrant,
    collection: String,
}

fn backend(e: impl std::fmt::Display) -> IndexError {
    IndexError::Backend(e.to_string())
}

impl QdrantIndex {
    /// Connects and makes sure the collection (cosine, `dimensions`) and its payload
    /// indexes exist.
    pub async fn connect(config: &QdrantConfig) -> Result<Self, IndexError> {
        let mut builder =
            Qdrant::from_url(&config.url).timeout(Duration::from_millis(config.timeout_ms));
        if let Some(key) = config
            .api_key_env
            .as_ref()
            .and_then(|v| std::env::var(v).ok())
            .filter(|k| !k.is_empty())
        {
            builder = builder.api_key(key);
        }
        let client = builder.build().map_err(backend)?;
        let name = config.collection.clone();
        if !client.collection_exists(&name).await.map_err(backend)? {
            client
                .create_collection(CreateCollectionBuilder::new(&name).vectors_config(
                    VectorParamsBuilder::new(config.dimensions, Distance::Cosine),
                ))
                .await
                .map_err(backend)?;
            for field in [TENANT_FIELD, FINGERPRINT_FIELD] {
                client
                    .create_field_index(CreateFieldIndexCollectionBuilder::new(
                        &name,
                        field,
                        FieldType::Keyword,
                    ))
                    .await
                    .map_err(backend)?;
            }
        }
        Ok(Self {
            client,
            collection: name,
        })
    }

    pub async fn drop_collection(&self) -> Result<(), IndexError> {
        self.client
            .delete_collection(&self.collection)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl VectorIndex for QdrantIndex {
    fn name(&self) -> &'static str {
        "qdrant"
    }

    async fn insert(
        &self,
        tenant: &str,
        entry_id: &str,
        fingerprint: &str,
        vector: &[f32],
    ) -> Result<(), IndexError> {
        let payload =
            Payload::try_from(payload_json(tenant, entry_id, fingerprint)).map_err(backend)?;
        let point = PointStruct::new(point_uuid(entry_id), vector.to_vec(), payload);
        self.client
            .upsert_points(UpsertPointsBuilder::new(&self.collection, vec![point]).wait(true))
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn search(
        &self,
        tenant: &str,
        fingerprint: &str,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<Candidate>, IndexError> {
        let response = self
            .client
            .query(
                QueryPointsBuilder::new(&self.collection)
                    .query(vector.to_vec())
                    .limit(k as u64)
                    .filter(search_filter(tenant, fingerprint))
                    .with_payload(true),
            )
            .await
            .map_err(backend)?;
        Ok(response
            .result
            .iter()
            .filter_map(|p| {
                let entry = p
                    .payload
                    .get(ENTRY_FIELD)
                    .and_then(|v| v.as_str())
                    .map(|s| s.as_str());
                candidate(entry, p.score)
            })
            .collect())
    }

    async fn remove(&self, _tenant: &str, entry_ids: &[String]) -> Result<(), IndexError> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<PointId> = entry_ids
            .iter()
            .map(|e| PointId::from(point_uuid(e)))
            .collect();
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(PointsIdsList { ids })
                    .wait(true),
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn remove_tenant(&self, tenant: &str) -> Result<(), IndexError> {
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(Filter::must([Condition::matches(
                        TENANT_FIELD,
                        tenant.to_string(),
                    )]))
                    .wait(true),
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    fn needs_load(&self) -> bool {
        false
    }

    fn len(&self) -> usize {
        0 // counted by Qdrant; not tracked per replica
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_map_to_their_uuid() {
        let id = "ce_0192f3a4b5c67d8e9f0a1b2c3d4e5f60";
        assert_eq!(point_uuid(id), "0192f3a4-b5c6-7d8e-9f0a-1b2c3d4e5f60");
        // Foreign ids still get a valid, stable UUID.
        let u = point_uuid("something-else");
        assert_eq!(u, point_uuid("something-else"));
        assert!(uuid::Uuid::parse_str(&u).is_ok());
        assert_ne!(u, point_uuid("something-elsf"));
    }

    #[test]
    fn the_search_filter_requires_tenant_and_fingerprint() {
        let f = search_filter("ten_a", "fp1");
        assert_eq!(f.must.len(), 2);
        let text = format!("{f:?}");
        assert!(text.contains("ten_a") && text.contains("fp1"));
        assert!(text.contains(TENANT_FIELD) && text.contains(FINGERPRINT_FIELD));
        assert!(f.should.is_empty() && f.must_not.is_empty());
    }

    #[test]
    fn payload_and_scores_round_trip() {
        let p = payload_json("t", "ce_x", "fp");
        assert_eq!(p[TENANT_FIELD], "t");
        assert_eq!(p[ENTRY_FIELD], "ce_x");
        assert!(Payload::try_from(p).is_ok());
        let c = candidate(Some("ce_x"), 0.93).unwrap();
        assert_eq!(c.entry_id, "ce_x");
        assert!((c.similarity - 0.93).abs() < 1e-6);
        assert!(candidate(None, 0.99).is_none());
    }
}
