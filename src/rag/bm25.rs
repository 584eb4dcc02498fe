//! A BM25 index in memory: the embedded store's full-text half. Terms are lower-cased
//! alphanumeric words without English stop words, lightly stemmed (plural endings), the
//! same analysis for documents and queries.

use std::collections::HashMap;
use std::sync::Arc;

const K1: f32 = 1.2;
const B: f32 = 0.75;

const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "he",
    "her", "his", "i", "if", "in", "into", "is", "it", "its", "of", "on", "or", "she", "such",
    "that", "the", "their", "then", "there", "these", "they", "this", "to", "was", "were", "will",
    "with", "what", "which", "who", "whom", "how", "do", "does", "did", "we", "you", "your",
];

fn stem(word: &str) -> String {
    let n = word.len();
    if n > 4 && word.ends_with("ies") {
        format!("{}y", &word[..n - 3])
    } else if n > 3 && word.ends_with('s') && !word.ends_with("ss") && !word.ends_with("us") {
        word[..n - 1].to_string()
    } else {
        word.to_string()
    }
}

/// The analysed terms of `text`, in order (repeats kept).
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .map(|w| if w.is_ascii() { stem(&w) } else { w })
        .collect()
}

struct Doc {
    id: Arc<str>,
    len: u32,
    live: bool,
}

/// Postings per term; removed documents are tombstoned and compacted away once they are a
/// quarter of the index.
#[derive(Default)]
pub struct Bm25 {
    docs: Vec<Doc>,
    by_id: HashMap<Arc<str>, u32>,
    postings: HashMap<String, Vec<(u32, u16)>>,
    total_len: u64,
    live: usize,
    dead: usize,
}

impl Bm25 {
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Adds (or replaces) a document.
    pub fn insert(&mut self, id: Arc<str>, text: &str) {
        self.remove(&id);
        let slot = self.docs.len() as u32;
        let terms = terms(text);
        let mut tf: HashMap<String, u16> = HashMap::new();
        for t in &terms {
            let e = tf.entry(t.clone()).or_insert(0);
            *e = e.saturating_add(1);
        }
        for (term, n) in tf {
            self.postings.entry(term).or_default().push((slot, n));
        }
        self.total_len += terms.len() as u64;
        self.docs.push(Doc {
            id: id.clone(),
            len: terms.len() as u32,
            live: true,
        });
        self.by_id.insert(id, slot);
        self.live += 1;
    }

    pub fn remove(&mut self, id: &str) {
        let Some(slot) = self.by_id.remove(id) else {
            return;
        };
        let doc = &mut self.docs[slot as usize];
        doc.live = false;
        self.total_len -= u64::from(doc.len);
        self.live -= 1;
        self.dead += 1;
        if self.dead > 1024 && self.dead * 4 > self.docs.len() {
            self.compact();
        }
    }

    /// Drops tombstones: renumbers live documents and rewrites the postings.
    fn compact(&mut self) {
        let mut remap = vec![u32::MAX; self.docs.len()];
        let mut docs = Vec::with_capacity(self.live);
        for (i, d) in std::mem::take(&mut self.docs).into_iter().enumerate() {
            if d.live {
                remap[i] = docs.len() as u32;
                docs.push(d);
            }
        }
        for list in self.postings.values_mut() {
            list.retain_mut(|(slot, _)| {
                let new = remap[*slot as usize];
                *slot = new;
                new != u32::MAX
            });
        }
        self.postings.retain(|_, l| !l.is_empty());
        self.by_id = docs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.clone(), i as u32))
            .collect();
        self.docs = docs;
        self.dead = 0;
    }

    /// The `k` best documents for `query` that `keep` accepts, best first.
    pub fn search(
        &self,
        query: &str,
        k: usize,
        keep: &dyn Fn(&str) -> bool,
    ) -> Vec<(Arc<str>, f32)> {
        if self.live == 0 || k == 0 {
            return Vec::new();
        }
        let n = self.live as f32;
        let avg = (self.total_len as f32 / n).max(1.0);
        let mut query_terms = terms(query);
        query_terms.sort();
        query_terms.dedup();
        let mut scores: HashMap<u32, f32> = HashMap::new();
        for t in &query_terms {
            let Some(list) = self.postings.get(t) else {
                continue;
            };
            // Live postings only: tombstones not yet compacted away must not shift the IDF.
            let df = list
                .iter()
                .filter(|(slot, _)| self.docs[*slot as usize].live)
                .count() as f32;
            if df == 0.0 {
                continue;
            }
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln().max(0.0);
            for &(slot, tf) in list {
                let doc = &self.docs[slot as usize];
                if !doc.live {
                    continue;
                }
                let tf = f32::from(tf);
                let norm = K1 * (1.0 - B + B * doc.len as f32 / avg);
                *scores.entry(slot).or_insert(0.0) += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        let mut ranked: Vec<(u32, f32)> = scores.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
            .into_iter()
            .filter(|(slot, _)| keep(&self.docs[*slot as usize].id))
            .take(k)
            .map(|(slot, s)| (self.docs[slot as usize].id.clone(), s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analysis_drops_stop_words_and_plurals() {
        assert_eq!(
            terms("The Rockets, and their Policies!"),
            vec!["rocket", "policy"]
        );
        assert_eq!(terms("class status"), vec!["class", "status"]);
    }

    #[test]
    fn ranks_by_term_rarity_and_frequency() {
        let mut idx = Bm25::default();
        idx.insert("a".into(), "refund policy: refunds within 14 days");
        idx.insert("b".into(), "travel policy for engineers");
        idx.insert("c".into(), "on-call rotation for engineers");
        let hits = idx.search("refund policy", 3, &|_| true);
        assert_eq!(&*hits[0].0, "a");
        assert_eq!(hits.len(), 2, "c shares no term");
        let filtered = idx.search("refund policy", 3, &|id| id != "a");
        assert_eq!(&*filtered[0].0, "b");
    }

    #[test]
    fn replace_and_remove_survive_compaction() {
        let mut idx = Bm25::default();
        for i in 0..3000 {
            idx.insert(format!("d{i}").into(), &format!("common word{i}"));
        }
        for i in 0..2000 {
            idx.remove(&format!("d{i}"));
        }
        assert_eq!(idx.len(), 1000);
        assert!(idx.search("word5", 5, &|_| true).is_empty());
        let hit = idx.search("word2500", 5, &|_| true);
        assert_eq!(&*hit[0].0, "d2500");
        idx.insert("d2500".into(), "replaced text");
        assert!(idx.search("word2500", 5, &|_| true).is_empty());
        assert_eq!(&*idx.search("replaced", 5, &|_| true)[0].0, "d2500");
        assert_eq!(idx.len(), 1000);
    }
}
