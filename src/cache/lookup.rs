//! Reading the cache: the exact lookup, the semantic lookup (candidates from the index, read
//! back from the store, through the rule checks and the cross-encoder), and the hit count.

use std::sync::Arc;

use super::{
    CROSS_MAX_READ, Cache, CacheKeys, Check, EntryRow, Hit, HitKind, StoredAnswer, VerifierMode,
    checksum, verify,
};
use crate::clock::now_ms;
use crate::store::{StoreError, on_pool};

impl Cache {
    /// Reads one entry's answer, checking it is whole: a row whose checksum or JSON does not
    /// hold is deleted and treated as absent.
    async fn answer_of(
        &self,
        tenant: &str,
        row: EntryRow,
    ) -> Result<Option<(String, StoredAnswer, f64, String)>, StoreError> {
        let (id, response, sum, query, cost, _expires) = row;
        if checksum(&response) == sum {
            if let Ok(answer) = serde_json::from_str::<StoredAnswer>(&response) {
                return Ok(Some((id, answer, cost, query)));
            }
        }
        tracing::error!(entry = %id, "cache entry failed its checksum; deleting it");
        metrics::counter!("qm_cache_corrupt_total").increment(1);
        self.delete_ids(tenant, &[id]).await?;
        Ok(None)
    }

    /// The exact lookup: same tenant, same canonical request.
    pub async fn lookup_exact(
        &self,
        tenant: &str,
        keys: &CacheKeys,
    ) -> Result<Option<Hit>, StoreError> {
        const SQL: &str = "SELECT id, response, checksum, query_text, cost_usd, expires_at FROM cache_entries \
                           WHERE tenant_id = $1 AND exact_key = $2 AND expires_at > $3";
        let row: Option<EntryRow> = on_pool!(&self.store, p => sqlx::query_as(SQL)
            .bind(tenant).bind(&keys.exact).bind(now_ms()).fetch_optional(p).await)?;
        let Some(row) = row else { return Ok(None) };
        Ok(self
            .answer_of(tenant, row)
            .await?
            .map(|(entry_id, answer, cost_usd, _)| Hit {
                entry_id,
                kind: HitKind::Exact,
                similarity: 1.0,
                answer,
                cost_usd,
            }))
    }

    /// The semantic lookup: nearest entries of this tenant with the same fingerprint, above
    /// the threshold, that pass verification. Best first; the first that holds is the hit.
    /// A tenant held to a stricter bound (`guard.rs`) needs that bound's threshold and bar.
    pub async fn lookup_semantic(
        self: &Arc<Self>,
        tenant: &str,
        keys: &CacheKeys,
        vector: &[f32],
        threshold: f32,
    ) -> Result<Option<Hit>, StoreError> {
        // A question the rules would refuse unread is not searched for at all.
        if self.checks.contains(&Check::Length) && verify::too_long(&keys.query) {
            metrics::counter!("qm_cache_verify_rejections_total", "check" => Check::Length.as_str())
                .increment(1);
            return Ok(None);
        }
        let held = self.in_force_now(tenant);
        let threshold = match held.tightened {
            true => threshold.max(held.threshold),
            false => threshold,
        };
        let bar = held
            .cross_bar
            .unwrap_or_else(|| self.config.cross_min_logit());
        let candidates = match self
            .index
            .search(tenant, &keys.fingerprint, vector, self.config.candidates)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cache index search failed; treating as a miss");
                metrics::counter!("qm_cache_index_errors_total").increment(1);
                return Ok(None);
            }
        };
        let cross_mode = self.config.verifier == VerifierMode::Cross;
        // Candidates that pass the rule checks, best first; with the cross-encoder the best
        // `CROSS_MAX_READ` of them are read in one pass, and the first it accepts is the hit.
        let mut passed = Vec::new();
        for c in candidates.into_iter().filter(|c| c.similarity >= threshold) {
            const SQL: &str = "SELECT id, response, checksum, query_text, cost_usd, expires_at FROM cache_entries \
                               WHERE tenant_id = $1 AND id = $2 AND fingerprint = $3 AND expires_at > $4 AND demoted_at IS NULL";
            let row: Option<EntryRow> = on_pool!(&self.store, p => sqlx::query_as(SQL)
                .bind(tenant).bind(&c.entry_id).bind(&keys.fingerprint).bind(now_ms()).fetch_optional(p).await)?;
            let Some(row) = row else { continue };
            let Some((entry_id, answer, cost_usd, cached_query)) =
                self.answer_of(tenant, row).await?
            else {
                continue;
            };
            if let Err(check) = verify::verify(&keys.query, &cached_query, &self.checks) {
                metrics::counter!("qm_cache_verify_rejections_total", "check" => check.as_str())
                    .increment(1);
                tracing::debug!(entry = %entry_id, check = check.as_str(), similarity = c.similarity, "semantic candidate vetoed");
                continue;
            }
            if let Some(v) = &self.learned {
                let p = v.probability(&verify::features(&keys.query, &cached_query, c.similarity));
                if p < self.config.learned_min_probability() {
                    metrics::counter!("qm_cache_verify_rejections_total", "check" => "learned")
                        .increment(1);
                    tracing::debug!(entry = %entry_id, p, similarity = c.similarity, "semantic candidate vetoed by the learned verifier");
                    continue;
                }
            }
            let hit = Hit {
                entry_id,
                kind: HitKind::Semantic,
                similarity: c.similarity,
                answer,
                cost_usd,
            };
            if !cross_mode {
                return Ok(Some(hit));
            }
            passed.push((hit, cached_query));
            if passed.len() == CROSS_MAX_READ {
                break;
            }
        }
        if passed.is_empty() {
            return Ok(None);
        }
        self.cross_accept(&keys.query, passed, bar).await
    }

    /// The first candidate the cross-encoder accepts. A verifier that is missing or fails
    /// serves nothing: a miss costs one upstream call, a wrong hit a wrong answer.
    async fn cross_accept(
        &self,
        query: &str,
        passed: Vec<(Hit, String)>,
        bar: f32,
    ) -> Result<Option<Hit>, StoreError> {
        let Some(cross) = self.cross.clone() else {
            return Ok(None);
        };
        // One pass per core at a time: past that a lookup is a miss rather than a queue
        // behind other tenants' passes (the embedder keeps its own priorities).
        let Ok(_slot) = self.cross_slots.clone().try_acquire_owned() else {
            metrics::counter!("qm_cache_lookups_total", "result" => "skipped", "why" => "verifier_busy")
                .increment(1);
            return Ok(None);
        };
        let query = query.to_string();
        let texts: Vec<(String, f32)> = passed
            .iter()
            .map(|(hit, q)| (q.clone(), hit.similarity))
            .collect();
        let logits = tokio::task::spawn_blocking(move || {
            let pairs: Vec<(&str, &str, f32)> = texts
                .iter()
                .map(|(t, s)| (t.as_str(), query.as_str(), *s))
                .collect();
            cross.logits(&pairs)
        })
        .await;
        let logits = match logits {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cache cross-encoder failed; treating as a miss");
                metrics::counter!("qm_cache_verify_errors_total").increment(1);
                return Ok(None);
            }
            Err(e) => {
                tracing::error!(error = %e, "cache cross-encoder panicked; treating as a miss");
                metrics::counter!("qm_cache_verify_errors_total").increment(1);
                return Ok(None);
            }
        };
        for ((hit, _), logit) in passed.into_iter().zip(logits) {
            if logit >= bar {
                return Ok(Some(hit));
            }
            metrics::counter!("qm_cache_verify_rejections_total", "check" => "cross").increment(1);
            tracing::debug!(entry = %hit.entry_id, logit, bar, similarity = hit.similarity, "semantic candidate vetoed by the cross-encoder");
        }
        Ok(None)
    }

    /// Counts a hit on the entry (for LRU eviction), off the request's path.
    pub fn touch(self: &Arc<Self>, entry_id: String) {
        let store = self.store.clone();
        tokio::spawn(async move {
            let r = on_pool!(&store, p => sqlx::query("UPDATE cache_entries SET hits = hits + 1, last_hit_at = $1 WHERE id = $2")
                .bind(now_ms()).bind(&entry_id).execute(p).await.map(|_| ()));
            if let Err(e) = r {
                tracing::debug!(error = %e, "cache hit count not updated");
            }
        });
    }
}
