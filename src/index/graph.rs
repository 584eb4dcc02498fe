//! One tenant's graph: hnsw_rs nodes and the entries they stand for.

use std::collections::HashMap;
use std::sync::Arc;

use hnsw_rs::prelude::Hnsw;
use parking_lot::RwLock;

use super::{Candidate, HnswParams, UnitCosine};

/// Cheap, stable 64-bit digest of a fingerprint string (filtering compares these).
pub(super) fn fp64(fingerprint: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in fingerprint.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// One node of a graph: the entries that share its vector (almost always one).
pub(super) struct Slot {
    pub(super) entries: Vec<Arc<str>>,
    pub(super) fp: u64,
    /// Its [`dedupe_key`].
    pub(super) key: u64,
    /// No live entry is left: a tombstone until the next rebuild.
    pub(super) dead: bool,
}

/// A vector's identity for de-duplication: the fingerprint and the vector rounded to 2^-14
/// per component. Identical texts embed to (nearly) identical vectors; thousands of equal
/// nodes in one HNSW graph form a clique that greedy search cannot leave, so equal vectors
/// share one node instead. (A near-duplicate that rounds differently just gets a node of its
/// own: a few equal nodes do no harm.)
pub(super) fn dedupe_key(fp: u64, vector: &[f32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ fp;
    for x in vector {
        let q = (x * 16384.0).round() as i32;
        for b in q.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[derive(Default)]
pub(super) struct Slots {
    pub(super) slots: Vec<Slot>,
    pub(super) by_entry: HashMap<Arc<str>, usize>,
    /// Live nodes by [`dedupe_key`].
    pub(super) by_vector: HashMap<u64, usize>,
    pub(super) dead: usize,
    /// Live entries (a node may hold several).
    pub(super) live_entries: usize,
    /// While a rebuild runs: entries inserted meanwhile, replayed into the new graph.
    /// (entry, fingerprint, vector) in insertion order.
    pub(super) pending: Option<Vec<(Arc<str>, u64, Vec<f32>)>>,
    /// Replaced by a rebuilt graph: writers must go to the new one.
    pub(super) retired: bool,
}

impl Slots {
    /// Places `entry`: `Some(id)` when a new node must be inserted into the graph, `None`
    /// when it is already live with this vector or joined the node of an equal vector.
    /// An entry already live under another vector (or fingerprint) is replaced: ids are
    /// reused (the retrieval store's `doc#0`), and a graph loaded from a snapshot older
    /// than the store must take the store's vector, not keep its own. Recorded for a
    /// running rebuild so the new graph gets it too.
    pub(super) fn push(&mut self, entry: Arc<str>, fp: u64, vector: &[f32]) -> Option<usize> {
        let key = dedupe_key(fp, vector);
        if let Some(&id) = self.by_entry.get(&entry) {
            if self.slots[id].key == key {
                return None;
            }
            self.remove(&entry);
        }
        if let Some(p) = self.pending.as_mut() {
            p.push((entry.clone(), fp, vector.to_vec()));
        }
        self.live_entries += 1;
        if let Some(&id) = self.by_vector.get(&key) {
            self.slots[id].entries.push(entry.clone());
            self.by_entry.insert(entry, id);
            return None;
        }
        let id = self.slots.len();
        self.slots.push(Slot {
            entries: vec![entry.clone()],
            fp,
            key,
            dead: false,
        });
        self.by_entry.insert(entry, id);
        self.by_vector.insert(key, id);
        Some(id)
    }

    /// Removes `entry`; its node becomes a tombstone when no entry is left on it.
    pub(super) fn remove(&mut self, entry: &str) -> bool {
        let Some(id) = self.by_entry.remove(entry) else {
            return false;
        };
        let slot = &mut self.slots[id];
        slot.entries.retain(|e| &**e != entry);
        self.live_entries -= 1;
        if slot.entries.is_empty() {
            slot.dead = true;
            self.dead += 1;
            let key = slot.key;
            if self.by_vector.get(&key) == Some(&id) {
                self.by_vector.remove(&key);
            }
        }
        true
    }
}

/// One tenant's graph. hnsw_rs cannot delete: removed entries become tombstones (filtered
/// out of every search) until the graph is rebuilt without them.
pub(super) struct Graph {
    pub(super) hnsw: Hnsw<'static, f32, UnitCosine>,
    pub(super) slots: RwLock<Slots>,
    /// Held (shared) around every insert into `hnsw`, and exclusively while a rebuild reads
    /// the vectors out. hnsw_rs' point iterator takes its read lock twice; with an insert
    /// queued for the write lock in between, parking_lot's fair lock would deadlock.
    pub(super) insert_gate: RwLock<()>,
}

impl Graph {
    pub(super) fn new(params: &HnswParams, capacity: usize) -> Self {
        Self {
            hnsw: Hnsw::new(
                params.m,
                capacity.max(1024),
                16,
                params.ef_construction,
                UnitCosine,
            ),
            slots: RwLock::new(Slots::default()),
            insert_gate: RwLock::new(()),
        }
    }

    /// Inserts unless this graph was retired by a rebuild (then returns false).
    pub(super) fn insert(&self, entry: Arc<str>, fp: u64, vector: &[f32]) -> bool {
        let id = {
            let mut s = self.slots.write();
            if s.retired {
                return false;
            }
            match s.push(entry, fp, vector) {
                Some(id) => id,
                // Already indexed with this vector, or shares an equal vector's node.
                None => return true,
            }
        };
        // The slot exists before the point: a search can never see an id without a slot.
        let _gate = self.insert_gate.read();
        self.hnsw.insert_slice((vector, id));
        true
    }

    pub(super) fn search(&self, fp: u64, vector: &[f32], k: usize, ef: usize) -> Vec<Candidate> {
        self.search_where(vector, k, ef, &|_: &str, slot_fp: u64| slot_fp == fp)
    }

    /// The `k` nearest live entries that `keep(entry, fingerprint)` accepts (checked during
    /// the walk, so a selective filter still fills `k`). Entries sharing a node come out
    /// together, with the same similarity.
    pub(super) fn search_where(
        &self,
        vector: &[f32],
        k: usize,
        ef: usize,
        keep: &dyn Fn(&str, u64) -> bool,
    ) -> Vec<Candidate> {
        let s = self.slots.read();
        let accept = |id: &usize| {
            s.slots
                .get(*id)
                .is_some_and(|x| !x.dead && x.entries.iter().any(|e| keep(e, x.fp)))
        };
        let mut out = Vec::with_capacity(k);
        for n in self.hnsw.search_filter(vector, k, ef.max(k), Some(&accept)) {
            let Some(slot) = s.slots.get(n.d_id).filter(|x| !x.dead) else {
                continue;
            };
            for e in slot.entries.iter().filter(|e| keep(e, slot.fp)) {
                if out.len() == k {
                    return out;
                }
                out.push(Candidate {
                    entry_id: e.to_string(),
                    similarity: 1.0 - n.distance,
                });
            }
        }
        out
    }

    /// Removes `entries`; `None` if this graph was retired by a rebuild.
    pub(super) fn remove(&self, entries: &[String]) -> Option<usize> {
        let mut s = self.slots.write();
        if s.retired {
            return None;
        }
        Some(entries.iter().filter(|e| s.remove(e)).count())
    }

    pub(super) fn live(&self) -> usize {
        self.slots.read().live_entries
    }

    pub(super) fn wants_rebuild(&self, params: &HnswParams) -> bool {
        let s = self.slots.read();
        s.pending.is_none()
            && s.dead >= params.rebuild_min_dead
            && s.dead as f64 >= params.rebuild_dead_fraction * s.slots.len() as f64
    }
}

impl Graph {
    /// Tombstoned nodes.
    pub(super) fn dead(&self) -> usize {
        self.slots.read().dead
    }
}
