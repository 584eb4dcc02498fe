//! The HNSW graph the semantic cache and the embedded retrieval store share: hnsw_rs
//! graphs, one per tenant (a tenant's search never walks another tenant's nodes), entries
//! found by vector and filtered during the walk (by fingerprint, or any predicate on the
//! entry id). hnsw_rs cannot delete: removed entries are tombstones until a rebuild, which
//! runs beside the live graph. Equal vectors share one node (`graph.rs`). Graphs are saved
//! to disk and loaded at start (`persist.rs`).

mod graph;
mod persist;

pub use persist::stale;

use std::collections::HashMap;
use std::sync::Arc;

use hnsw_rs::prelude::Distance;
use parking_lot::RwLock;

use graph::{Graph, fp64};

/// A candidate from the index: the entry id and its cosine similarity to the query.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub entry_id: String,
    pub similarity: f32,
}

/// HNSW graph parameters (`[cache.hnsw]`).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HnswParams {
    /// Links per node (hnsw_rs' `max_nb_connection`).
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    /// Rebuild a tenant's graph when this share of its nodes are tombstones.
    pub rebuild_dead_fraction: f64,
    /// ... and at least this many.
    pub rebuild_min_dead: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            rebuild_dead_fraction: 0.25,
            rebuild_min_dead: 64,
        }
    }
}

/// Cosine distance for unit vectors: `1 - a·b`, clamped at 0. (hnsw_rs' own `DistDot`
/// asserts `a·b <= 1`, which rounding breaks for a vector and its exact duplicate: a
/// repeated query would panic.) Eight accumulators let the loop vectorize.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCosine;

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

impl Distance<f32> for UnitCosine {
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        (1.0 - dot(va, vb)).max(0.0)
    }
}

/// hnsw_rs graphs, one per tenant: a tenant's search never walks another tenant's nodes.
pub struct HnswIndex {
    params: HnswParams,
    capacity_hint: usize,
    tenants: RwLock<HashMap<String, Arc<Graph>>>,
    /// Inserts, removals and rebuilds so far (whether a snapshot is due).
    changes: std::sync::atomic::AtomicU64,
}

impl HnswIndex {
    pub fn new(params: HnswParams, capacity_hint: usize) -> Self {
        Self {
            params,
            capacity_hint,
            tenants: RwLock::new(HashMap::new()),
            changes: Default::default(),
        }
    }

    fn graph(&self, tenant: &str) -> Option<Arc<Graph>> {
        self.tenants.read().get(tenant).cloned()
    }

    fn graph_or_new(&self, tenant: &str) -> Arc<Graph> {
        if let Some(g) = self.graph(tenant) {
            return g;
        }
        self.tenants
            .write()
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(Graph::new(&self.params, self.capacity_hint)))
            .clone()
    }

    /// Synchronous insert (bulk loads and benchmarks).
    pub fn insert_sync(&self, tenant: &str, entry_id: &str, fingerprint: &str, vector: &[f32]) {
        self.changed();
        let entry: Arc<str> = Arc::from(entry_id);
        // A rebuild may retire the graph between the lookup and the insert: go again.
        while !self
            .graph_or_new(tenant)
            .insert(entry.clone(), fp64(fingerprint), vector)
        {}
    }

    /// Removes entries of one tenant (tombstones until a rebuild).
    pub fn remove_sync(&self, tenant: &str, entry_ids: &[String]) {
        self.changed();
        while let Some(g) = self.graph(tenant) {
            if g.remove(entry_ids).is_some() {
                break;
            }
        }
    }

    /// Bulk load for one tenant, inserting in parallel (start-up, benchmarks). Entries
    /// already in the graph with the same vector are skipped; an entry there with another
    /// vector (a snapshot older than the store) is replaced by the one given.
    pub fn load_tenant(&self, tenant: &str, items: Vec<(String, String, Vec<f32>)>) {
        self.changed();
        loop {
            let graph = self.graph_or_new(tenant);
            let mut batch: Vec<(&[f32], usize)> = Vec::with_capacity(items.len());
            {
                let mut s = graph.slots.write();
                if s.retired {
                    continue;
                }
                for (entry, fingerprint, vector) in &items {
                    if let Some(id) = s.push(Arc::from(entry.as_str()), fp64(fingerprint), vector) {
                        batch.push((vector.as_slice(), id));
                    }
                }
            }
            let _gate = graph.insert_gate.read();
            graph.hnsw.parallel_insert_slice(&batch);
            return;
        }
    }

    /// Synchronous search (benchmarks, evaluation).
    pub fn search_sync(
        &self,
        tenant: &str,
        fingerprint: &str,
        vector: &[f32],
        k: usize,
    ) -> Vec<Candidate> {
        match self.graph(tenant) {
            Some(g) => g.search(fp64(fingerprint), vector, k, self.params.ef_search),
            None => Vec::new(),
        }
    }

    /// Nearest entries of `tenant` whatever their fingerprint, filtered by entry id (the
    /// retrieval store's metadata filters); `ef` overrides the configured `ef_search`.
    pub fn search_entries(
        &self,
        tenant: &str,
        vector: &[f32],
        k: usize,
        ef: Option<usize>,
        keep: &dyn Fn(&str) -> bool,
    ) -> Vec<Candidate> {
        match self.graph(tenant) {
            Some(g) => g.search_where(
                vector,
                k,
                ef.unwrap_or(self.params.ef_search),
                &|entry: &str, _| keep(entry),
            ),
            None => Vec::new(),
        }
    }

    /// Removes entries of one tenant (tombstones; see [`Graph`]).
    pub fn remove_entries(&self, tenant: &str, entry_ids: &[String]) {
        self.remove_sync(tenant, entry_ids);
    }

    /// Tenants whose graphs are due a rebuild.
    pub fn tenants_to_rebuild(&self) -> Vec<String> {
        self.tenants
            .read()
            .iter()
            .filter(|(_, g)| g.wants_rebuild(&self.params))
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Rebuilds `tenant`'s graph without its tombstones. Runs on a blocking thread while
    /// searches and inserts go on against the old graph; entries inserted or removed
    /// meanwhile are carried over before the new graph replaces it.
    pub fn rebuild(&self, tenant: &str) -> usize {
        let Some(old) = self.graph(tenant) else {
            return 0;
        };
        let snapshot: Vec<(usize, Vec<Arc<str>>, u64)> = {
            let mut s = old.slots.write();
            if s.pending.is_some() {
                return 0; // one rebuild at a time
            }
            s.pending = Some(Vec::new());
            s.slots
                .iter()
                .enumerate()
                .filter(|(_, x)| !x.dead)
                .map(|(i, x)| (i, x.entries.clone(), x.fp))
                .collect()
        };
        // Vectors of the live nodes, read out of the old graph.
        let mut vectors: HashMap<usize, Vec<f32>> = HashMap::with_capacity(snapshot.len());
        {
            // Inserts wait (searches do not) while the vectors are copied out.
            let _gate = old.insert_gate.write();
            for point in old.hnsw.get_point_indexation() {
                vectors.insert(point.get_origin_id(), point.get_v().to_vec());
            }
        }
        let fresh = Graph::new(&self.params, snapshot.len().max(self.capacity_hint));
        let mut batch: Vec<(&[f32], usize)> = Vec::with_capacity(snapshot.len());
        {
            let mut s = fresh.slots.write();
            for (old_id, entries, fp) in &snapshot {
                if let Some(v) = vectors.get(old_id) {
                    for entry in entries {
                        if let Some(id) = s.push(entry.clone(), *fp, v) {
                            batch.push((v.as_slice(), id));
                        }
                    }
                }
            }
        }
        fresh.hnsw.parallel_insert_slice(&batch);
        // Swap under the tenants lock so no insert lands in the old graph after this point.
        let mut tenants = self.tenants.write();
        let mut s = old.slots.write();
        s.retired = true;
        let pending = s.pending.take().unwrap_or_default();
        // First the removals that happened during the rebuild, of entries the new graph
        // copied (an entry removed and added again under the same id, as a re-ingested
        // chunk is, is removed here and re-added from `pending` below, with its new vector).
        let removed: Vec<String> = snapshot
            .iter()
            .flat_map(|(old_id, entries, _)| {
                let now = &s.slots[*old_id];
                entries
                    .iter()
                    .filter(|e| {
                        now.dead
                            || !now.entries.contains(e)
                            || pending.iter().any(|(p, _, _)| p == *e)
                    })
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        fresh.remove(&removed);
        // Then what was added meanwhile and is still live, in order.
        for (entry, fp, v) in pending {
            if s.by_entry.contains_key(&entry) {
                fresh.insert(entry, fp, &v);
            }
        }
        drop(s);
        let live = fresh.live();
        tenants.insert(tenant.to_string(), Arc::new(fresh));
        self.changed();
        live
    }

    fn changed(&self) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A count that moves whenever a graph changes (a snapshot is due when it moved).
    pub fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drops a tenant's whole graph.
    pub fn remove_tenant(&self, tenant: &str) {
        self.changed();
        self.tenants.write().remove(tenant);
    }

    /// Live entries over all tenants.
    pub fn len(&self) -> usize {
        self.tenants.read().values().map(|g| g.live()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tombstoned nodes over all graphs.
    pub fn dead(&self) -> usize {
        self.tenants.read().values().map(|g| g.dead()).sum()
    }
}

/// A deterministic unit vector of `dim` numbers from `seed` (xorshift): the tests' vectors
/// here, in `persist` and in the embedded RAG store.
#[cfg(test)]
pub(crate) fn test_unit(seed: u64, dim: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= n);
    v
}

#[cfg(test)]
mod tests {
    use super::test_unit as unit;
    use super::*;

    #[test]
    fn tenants_and_fingerprints_are_isolated() {
        let idx = HnswIndex::new(HnswParams::default(), 100);
        let v = unit(1, 32);
        idx.insert_sync("a", "e1", "fp", &v);
        idx.insert_sync("a", "e2", "other-fp", &v);
        assert_eq!(idx.search_sync("a", "fp", &v, 5).len(), 1);
        assert_eq!(idx.search_sync("a", "fp", &v, 5)[0].entry_id, "e1");
        assert!((idx.search_sync("a", "fp", &v, 5)[0].similarity - 1.0).abs() < 1e-5);
        assert!(idx.search_sync("b", "fp", &v, 5).is_empty());
    }

    #[test]
    fn tombstones_hide_entries_and_rebuild_drops_them() {
        let params = HnswParams {
            rebuild_min_dead: 10,
            ..HnswParams::default()
        };
        let idx = HnswIndex::new(params, 100);
        let items: Vec<_> = (0..200)
            .map(|i| (format!("e{i}"), "fp".to_string(), unit(i, 32)))
            .collect();
        idx.load_tenant("t", items.clone());
        assert_eq!(idx.len(), 200);
        let removed: Vec<String> = (0..100).map(|i| format!("e{i}")).collect();
        idx.remove_sync("t", &removed);
        assert_eq!(idx.len(), 100);
        assert!(
            idx.search_sync("t", "fp", &unit(5, 32), 3)
                .iter()
                .all(|c| c.entry_id != "e5")
        );
        assert_eq!(idx.tenants_to_rebuild(), vec!["t".to_string()]);
        assert_eq!(idx.rebuild("t"), 100);
        assert_eq!(idx.dead(), 0);
        // Every live entry is still found as its own nearest neighbour.
        for (id, _, v) in &items[100..] {
            assert_eq!(&idx.search_sync("t", "fp", v, 1)[0].entry_id, id);
        }
        assert!(idx.tenants_to_rebuild().is_empty());
    }

    #[test]
    fn inserts_and_removals_during_a_rebuild_are_kept() {
        let idx = Arc::new(HnswIndex::new(
            HnswParams {
                rebuild_min_dead: 1,
                ..HnswParams::default()
            },
            100,
        ));
        let items: Vec<_> = (0..2000)
            .map(|i| (format!("e{i}"), "fp".to_string(), unit(i, 64)))
            .collect();
        idx.load_tenant("t", items);
        idx.remove_sync("t", &["e0".to_string()]);
        let writer = {
            let idx = idx.clone();
            std::thread::spawn(move || {
                for i in 5000..5200u64 {
                    idx.insert_sync("t", &format!("e{i}"), "fp", &unit(i, 64));
                }
                idx.remove_sync("t", &["e1".to_string()]);
            })
        };
        idx.rebuild("t");
        writer.join().unwrap();
        // Whatever the interleaving: e1 is gone, all 200 new entries are searchable.
        assert!(
            idx.search_sync("t", "fp", &unit(1, 64), 1)
                .iter()
                .all(|c| c.entry_id != "e1")
        );
        for i in 5000..5200u64 {
            assert_eq!(
                idx.search_sync("t", "fp", &unit(i, 64), 1)[0].entry_id,
                format!("e{i}")
            );
        }
        assert_eq!(idx.len(), 2000 - 2 + 200);
    }

    /// The retrieval store reuses ids (`doc#0`): an entry removed and added again, before or
    /// during a rebuild, is live in the rebuilt graph with its new vector.
    #[test]
    fn a_re_added_id_survives_rebuilds() {
        let idx = HnswIndex::new(
            HnswParams {
                rebuild_min_dead: 1,
                rebuild_dead_fraction: 0.0,
                ..HnswParams::default()
            },
            100,
        );
        let items: Vec<_> = (0..300)
            .map(|i| (format!("e{i}"), String::new(), unit(i, 64)))
            .collect();
        idx.load_tenant("t", items);
        for i in 0..100u64 {
            idx.remove_entries("t", &[format!("e{i}")]);
            idx.insert_sync("t", &format!("e{i}"), "", &unit(1000 + i, 64));
        }
        assert_eq!(idx.tenants_to_rebuild(), vec!["t".to_string()]);
        assert_eq!(idx.rebuild("t"), 300);
        for i in 0..100u64 {
            let hit = &idx.search_entries("t", &unit(1000 + i, 64), 1, None, &|_| true)[0];
            assert_eq!(hit.entry_id, format!("e{i}"));
            assert!(hit.similarity > 0.999, "the new vector: {hit:?}");
        }
        assert_eq!(idx.len(), 300);
    }

    /// Thousands of equal vectors (a boilerplate chunk) share one node: the graph around
    /// them stays searchable, and every one of them is still found and removable.
    #[test]
    fn many_equal_vectors_do_not_trap_the_search() {
        let idx = HnswIndex::new(HnswParams::default(), 100);
        let boiler = unit(7, 64);
        let mut items: Vec<_> = (0..1300)
            .map(|i| (format!("boiler{i}"), String::new(), boiler.clone()))
            .collect();
        items.extend((0..40).map(|i| (format!("topic{i}"), String::new(), unit(100 + i, 64))));
        idx.load_tenant("t", items);
        for i in 0..1300u64 {
            idx.insert_sync("t", &format!("late{i}"), "", &boiler);
        }
        assert_eq!(idx.len(), 1300 + 40 + 1300);
        for i in 0..40u64 {
            let hit = &idx.search_entries("t", &unit(100 + i, 64), 1, None, &|_| true)[0];
            assert_eq!(hit.entry_id, format!("topic{i}"));
        }
        let near = idx.search_entries("t", &boiler, 5, None, &|_| true);
        assert_eq!(near.len(), 5);
        assert!(near.iter().all(|c| c.similarity > 0.999));
        // A filter sees each entry of a shared node on its own.
        let only = idx.search_entries("t", &boiler, 3, None, &|e| e == "boiler17");
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].entry_id, "boiler17");
        let all: Vec<String> = (0..1300).map(|i| format!("boiler{i}")).collect();
        idx.remove_entries("t", &all);
        let near = idx.search_entries("t", &boiler, 3, None, &|_| true);
        assert!(near.iter().all(|c| c.entry_id.starts_with("late")));
        assert_eq!(idx.len(), 1300 + 40);
        assert_eq!(idx.dead(), 0, "the node still holds the late entries");
    }
}
