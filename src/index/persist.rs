//! Graphs on disk: a snapshot of every tenant's graph is written at shutdown (and every so
//! often while running), and loaded at start instead of being rebuilt from the store's
//! vectors (minutes at 100,000 entries). Each snapshot is a new version folder: hnsw_rs'
//! own dump of the graph and its vectors, the entries of each node (`slots.json`), and last
//! a manifest with every file's SHA-256. A version without a manifest (a process killed
//! mid-write) or whose files fail their checksums is ignored and deleted; older versions go
//! once a newer one is complete. The owner reconciles what it loaded with its store: it
//! loads every stored entry into the graph (`HnswIndex::load_tenant`), which skips entries
//! already there with the same vector, inserts those stored since and replaces those whose
//! vector changed since (an id re-used for new content after the snapshot was written: each
//! node's vector key is saved with it, see `Slots::push`); entries gone since are removed
//! ([`stale`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hnsw_rs::api::AnnT;
use hnsw_rs::hnswio::HnswIo;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::graph::{Graph, Slot, Slots};
use super::{HnswIndex, UnitCosine};

const FORMAT: u32 = 1;
const BASENAME: &str = "graph";

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: u32,
    tenant: String,
    /// SHA-256 (hex) of every other file of the version.
    files: BTreeMap<String, String>,
    nodes: usize,
    live_entries: usize,
}

#[derive(Serialize, Deserialize)]
struct SavedSlot {
    entries: Vec<String>,
    fp: u64,
    key: u64,
    dead: bool,
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// A tenant's folder: a digest of its id (ids may hold any character).
fn tenant_dir(dir: &Path, tenant: &str) -> PathBuf {
    dir.join(&hex::encode(Sha256::digest(tenant.as_bytes()))[..32])
}

/// Version folders (`v<seq>`) of a tenant, newest first.
fn versions(tenant_dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(tenant_dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    let seq = name.strip_prefix('v')?.parse().ok()?;
                    Some((seq, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| b.0.cmp(&a.0));
    out
}

impl HnswIndex {
    /// Writes a snapshot of every tenant's graph under `dir`. Inserts into a graph wait
    /// while it is written (searches do not). Returns the tenants written.
    pub fn save(&self, dir: &Path) -> std::io::Result<usize> {
        let graphs: Vec<(String, Arc<Graph>)> = self
            .tenants
            .read()
            .iter()
            .map(|(t, g)| (t.clone(), g.clone()))
            .collect();
        let mut written = 0;
        for (tenant, graph) in graphs {
            save_graph(dir, &tenant, &graph)?;
            written += 1;
        }
        Ok(written)
    }

    /// Loads the newest complete snapshot of every tenant under `dir` (replacing any graph
    /// of that tenant in memory). Returns each loaded tenant with its live entries.
    pub fn load(&self, dir: &Path) -> Vec<(String, Vec<String>)> {
        let mut loaded = Vec::new();
        let Ok(tenants) = std::fs::read_dir(dir) else {
            return loaded;
        };
        for t in tenants.filter_map(|e| e.ok()) {
            for (_, version) in versions(&t.path()) {
                match load_graph(&version) {
                    Ok((tenant, graph)) => {
                        let entries: Vec<String> = graph
                            .slots
                            .read()
                            .by_entry
                            .keys()
                            .map(|e| e.to_string())
                            .collect();
                        self.tenants.write().insert(tenant.clone(), Arc::new(graph));
                        loaded.push((tenant, entries));
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, path = %version.display(), "graph snapshot unusable; ignored");
                        let _ = std::fs::remove_dir_all(&version);
                    }
                }
            }
        }
        loaded
    }
}

fn save_graph(dir: &Path, tenant: &str, graph: &Graph) -> std::io::Result<()> {
    let tdir = tenant_dir(dir, tenant);
    std::fs::create_dir_all(&tdir)?;
    let seq = versions(&tdir).first().map_or(1, |(s, _)| s + 1);
    let vdir = tdir.join(format!("v{seq}"));
    std::fs::create_dir_all(&vdir)?;
    let (slots, nodes, live) = {
        // The graph and its slots as of one moment: inserts wait.
        let _gate = graph.insert_gate.write();
        graph
            .hnsw
            .file_dump(&vdir, BASENAME)
            .map_err(|e| std::io::Error::other(format!("hnsw dump: {e}")))?;
        let s = graph.slots.read();
        let saved: Vec<SavedSlot> = s
            .slots
            .iter()
            .map(|x| SavedSlot {
                entries: x.entries.iter().map(|e| e.to_string()).collect(),
                fp: x.fp,
                key: x.key,
                dead: x.dead,
            })
            .collect();
        (saved, s.slots.len(), s.live_entries)
    };
    let mut f = std::fs::File::create(vdir.join("slots.json"))?;
    serde_json::to_writer(&mut f, &slots)?;
    f.sync_all()?;
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(&vdir)?.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().to_string();
        std::fs::File::open(e.path())?.sync_all()?;
        files.insert(name, sha256_file(&e.path())?);
    }
    let manifest = Manifest {
        format: FORMAT,
        tenant: tenant.to_string(),
        files,
        nodes,
        live_entries: live,
    };
    // The manifest last, atomically: a version without one is incomplete.
    let tmp = vdir.join("manifest.json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(&manifest)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, vdir.join("manifest.json"))?;
    if let Ok(d) = std::fs::File::open(&vdir) {
        let _ = d.sync_all();
    }
    for (s, old) in versions(&tdir) {
        if s != seq {
            let _ = std::fs::remove_dir_all(old);
        }
    }
    Ok(())
}

fn load_graph(vdir: &Path) -> anyhow::Result<(String, Graph)> {
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(vdir.join("manifest.json"))?)?;
    anyhow::ensure!(manifest.format == FORMAT, "format {}", manifest.format);
    for (name, sum) in &manifest.files {
        anyhow::ensure!(
            &sha256_file(&vdir.join(name))? == sum,
            "{name} fails its checksum"
        );
    }
    let saved: Vec<SavedSlot> = serde_json::from_slice(&std::fs::read(vdir.join("slots.json"))?)?;
    anyhow::ensure!(
        saved.len() == manifest.nodes,
        "slots do not match the manifest"
    );
    // The loaded graph borrows its reader for its lifetime: the reader is kept for good
    // (one small struct per tenant per start). The files passed their checksums, so
    // hnsw_rs' own asserts on the format hold; were one to fail, the panic ends the loading
    // task and the owner rebuilds from its store.
    let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(vdir, BASENAME)));
    let hnsw = io.load_hnsw::<f32, UnitCosine>()?;
    // Nodes in the dump; a slot whose node was not yet in the graph when it was written
    // (an insert in flight) is left out, so its entry is inserted again from the store.
    let present: HashSet<usize> = hnsw
        .get_point_indexation()
        .into_iter()
        .map(|p| p.get_origin_id())
        .collect();
    let mut slots = Slots::default();
    for (id, s) in saved.into_iter().enumerate() {
        let live = !s.dead && present.contains(&id);
        let entries: Vec<Arc<str>> = s.entries.iter().map(|e| Arc::from(e.as_str())).collect();
        if live {
            for e in &entries {
                slots.by_entry.insert(e.clone(), id);
            }
            slots.by_vector.insert(s.key, id);
            slots.live_entries += entries.len();
        } else {
            slots.dead += 1;
        }
        slots.slots.push(Slot {
            entries: if live { entries } else { Vec::new() },
            fp: s.fp,
            key: s.key,
            dead: !live,
        });
    }
    Ok((
        manifest.tenant,
        Graph {
            hnsw,
            slots: RwLock::new(slots),
            insert_gate: RwLock::new(()),
        },
    ))
}

/// The entries of `loaded` that the store no longer holds, by tenant: what a loaded
/// snapshot must forget.
pub fn stale(
    loaded: &[(String, Vec<String>)],
    in_store: &HashMap<String, HashSet<String>>,
) -> Vec<(String, Vec<String>)> {
    loaded
        .iter()
        .map(|(tenant, entries)| {
            let keep = in_store.get(tenant);
            let gone: Vec<String> = entries
                .iter()
                .filter(|e| !keep.is_some_and(|k| k.contains(*e)))
                .cloned()
                .collect();
            (tenant.clone(), gone)
        })
        .filter(|(_, gone)| !gone.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{HnswParams, test_unit as unit};

    fn filled() -> HnswIndex {
        let idx = HnswIndex::new(HnswParams::default(), 100);
        let items: Vec<_> = (0..500)
            .map(|i| (format!("e{i}"), "fp".to_string(), unit(i, 32)))
            .collect();
        idx.load_tenant("tenant/ä b", items);
        idx.insert_sync("other", "x1", "fp", &unit(9_999, 32));
        idx.remove_sync("tenant/ä b", &["e7".to_string()]);
        idx
    }

    #[test]
    fn a_saved_graph_loads_and_answers_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let idx = filled();
        assert_eq!(idx.save(dir.path()).unwrap(), 2);
        let back = HnswIndex::new(HnswParams::default(), 100);
        let mut loaded = back.load(dir.path());
        loaded.sort();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[1].0, "tenant/ä b");
        assert_eq!(loaded[1].1.len(), 499, "the removed entry stays removed");
        for q in [3u64, 42, 400] {
            let v = unit(q, 32);
            assert_eq!(
                idx.search_sync("tenant/ä b", "fp", &v, 3),
                back.search_sync("tenant/ä b", "fp", &v, 3)
            );
        }
        assert!(back.search_sync("tenant/ä b", "fp", &unit(7, 32), 1)[0].entry_id != "e7");
        // A loaded graph takes inserts and removals like a built one, and saves again.
        back.insert_sync("tenant/ä b", "new", "fp", &unit(123_456, 32));
        assert_eq!(
            back.search_sync("tenant/ä b", "fp", &unit(123_456, 32), 1)[0].entry_id,
            "new"
        );
        assert_eq!(back.save(dir.path()).unwrap(), 2);
        let again = HnswIndex::new(HnswParams::default(), 100);
        assert_eq!(again.load(dir.path()).len(), 2);
        assert_eq!(again.len(), 501);
    }

    /// A process killed mid-write leaves a version without its manifest: it is ignored (and
    /// deleted) and the previous complete version loads. A version whose files were damaged
    /// fails its checksums: ignored too.
    #[test]
    fn torn_and_damaged_snapshots_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let idx = filled();
        idx.save(dir.path()).unwrap();
        let tdir = tenant_dir(dir.path(), "tenant/ä b");
        // A torn newer version: files, no manifest.
        let torn = tdir.join("v99");
        std::fs::create_dir_all(&torn).unwrap();
        std::fs::write(torn.join("graph.hnsw.data"), b"half a dump").unwrap();
        let back = HnswIndex::new(HnswParams::default(), 100);
        let loaded = back.load(dir.path());
        assert_eq!(loaded.len(), 2, "the complete version loads");
        assert!(!torn.exists(), "the torn one is gone");
        assert_eq!(back.len(), 500);

        // Damage the only version's data: nothing loads for that tenant (it is rebuilt
        // from the store by its owner).
        let (_, v) = versions(&tdir).into_iter().next().unwrap();
        let data = v.join("graph.hnsw.data");
        let mut bytes = std::fs::read(&data).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&data, bytes).unwrap();
        let back = HnswIndex::new(HnswParams::default(), 100);
        let loaded = back.load(dir.path());
        assert_eq!(loaded.len(), 1, "only the undamaged tenant");
        assert_eq!(loaded[0].0, "other");
    }

    /// A snapshot older than the store (written, then ids re-used for new content, then the
    /// process killed): loading the store's entries into it replaces those whose vector or
    /// fingerprint changed since and skips the others.
    #[test]
    fn entries_changed_since_the_snapshot_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        filled().save(dir.path()).unwrap();
        let back = HnswIndex::new(HnswParams::default(), 100);
        assert_eq!(back.load(dir.path()).len(), 2);
        let dead = back.dead();
        let items: Vec<_> = (0..500u64)
            .filter(|i| *i != 7)
            .map(|i| match i {
                3 | 42 => (format!("e{i}"), "fp".to_string(), unit(10_000 + i, 32)),
                5 => (format!("e{i}"), "other-fp".to_string(), unit(i, 32)),
                _ => (format!("e{i}"), "fp".to_string(), unit(i, 32)),
            })
            .collect();
        back.load_tenant("tenant/ä b", items);
        assert_eq!(back.len(), 500, "499 entries and the other tenant's one");
        assert_eq!(back.dead(), dead + 3, "only the three changed entries");
        for i in [3u64, 42] {
            let hit = &back.search_sync("tenant/ä b", "fp", &unit(10_000 + i, 32), 1)[0];
            assert_eq!(hit.entry_id, format!("e{i}"));
            assert!(hit.similarity > 0.999, "the new vector: {hit:?}");
            let old = &back.search_sync("tenant/ä b", "fp", &unit(i, 32), 1)[0];
            assert!(old.similarity < 0.999, "the old vector is gone: {old:?}");
        }
        assert_eq!(
            back.search_sync("tenant/ä b", "other-fp", &unit(5, 32), 1)[0].entry_id,
            "e5"
        );
        assert_ne!(
            back.search_sync("tenant/ä b", "fp", &unit(5, 32), 1)[0].entry_id,
            "e5"
        );
    }

    #[test]
    fn stale_entries_are_those_the_store_lost() {
        let loaded = vec![("t".to_string(), vec!["a".into(), "b".into(), "c".into()])];
        let mut in_store: HashMap<String, HashSet<String>> = HashMap::new();
        in_store.insert("t".into(), ["a".to_string(), "c".to_string()].into());
        assert_eq!(
            stale(&loaded, &in_store),
            vec![("t".to_string(), vec!["b".to_string()])]
        );
        assert_eq!(
            stale(&loaded, &HashMap::new()),
            vec![("t".to_string(), vec!["a".into(), "b".into(), "c".into()])]
        );
    }
}
