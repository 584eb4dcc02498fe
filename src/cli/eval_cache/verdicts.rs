//! Hand verdicts on cache hits (`eval cache --verdicts`, `--list-to-judge`): the labels
//! link only a file's own pairs, so a hit on a cached question no pair links to the query
//! ("unjudged") is counted false though most such hits are the same question in other
//! words, and a label is one annotator's call either way. A verdict file names each (query,
//! cached question) by a hash of the two normalised texts, so it holds no dataset text; the
//! list to judge gives the texts in hash order, without the label, stage or score of the hit.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::cache::eval::Verdict;

/// The key of a (query, cached question) pair: 12 hex digits of SHA-256 over both texts.
pub fn key(query: &str, cached: &str) -> String {
    let digest = Sha256::digest(format!("{query}\t{cached}").as_bytes());
    hex::encode(&digest[..6])
}

/// Reads `KEY<TAB>same|different|unclear` lines (`#` starts a comment). A key must be 12
/// lower-case hex digits (as [`key`] writes it: one that could never match is refused, not
/// ignored), and a key given twice must carry the same verdict.
pub fn read(path: &Path) -> anyhow::Result<HashMap<String, Verdict>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--verdicts {}: {e}", path.display()))?;
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            anyhow::anyhow!(
                "{}:{}: expected KEY<TAB>same|different|unclear, KEY 12 lower-case hex digits",
                path.display(),
                n + 1
            )
        };
        let (k, v) = line.split_once('\t').ok_or_else(bad)?;
        if k.len() != 12
            || !k
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        let verdict = match v.split('\t').next().unwrap_or("") {
            "same" => Verdict::Same,
            "different" => Verdict::Different,
            "unclear" => Verdict::Unclear,
            _ => return Err(bad()),
        };
        if out
            .insert(k.to_string(), verdict)
            .is_some_and(|was| was != verdict)
        {
            anyhow::bail!(
                "{}:{}: {k} was given another verdict above",
                path.display(),
                n + 1
            );
        }
    }
    Ok(out)
}

/// Writes the hits without a verdict, once each, in key order.
pub fn write_unread<'a>(
    path: &Path,
    hits: impl IntoIterator<Item = (&'a str, &'a str, Option<Verdict>)>,
) -> anyhow::Result<usize> {
    let todo: BTreeMap<String, (&str, &str)> = hits
        .into_iter()
        .filter(|(_, _, v)| v.is_none())
        .map(|(q, c, _)| (key(q, c), (q, c)))
        .collect();
    let text: String = todo
        .iter()
        .map(|(k, (q, c))| format!("{k}\t{q}\t{c}\n"))
        .collect();
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(todo.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_round_trip_by_key_and_bad_lines_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list.tsv");
        let hits = [
            ("how do i lose weight?", "how can i lose weight?", None),
            ("how do i lose weight?", "how can i lose weight?", None),
            ("what is rust?", "what is go?", Some(Verdict::Different)),
        ];
        // Judged hits are not listed; a hit served twice is listed once.
        assert_eq!(write_unread(&list, hits).unwrap(), 1);
        let listed = std::fs::read_to_string(&list).unwrap();
        let k = key("how do i lose weight?", "how can i lose weight?");
        assert_eq!(
            listed,
            format!("{k}\thow do i lose weight?\thow can i lose weight?\n")
        );
        // The order of the two texts matters: the query is asked, the other is cached.
        assert_ne!(k, key("how can i lose weight?", "how do i lose weight?"));
        let file = dir.path().join("verdicts.tsv");
        let other = "0123456789ab";
        // CRLF endings, a comment, a repeated key with the same verdict, trailing columns.
        let text = format!("# comment\r\n{k}\tsame\r\n{other}\tunclear\tnote\n{k}\tsame\n");
        std::fs::write(&file, text).unwrap();
        let read = read(&file).unwrap();
        assert_eq!(read.get(&k), Some(&Verdict::Same));
        assert_eq!(read.get(other), Some(&Verdict::Unclear));
        let refused = |text: String, line: &str| {
            std::fs::write(&file, text).unwrap();
            let e = super::read(&file).unwrap_err().to_string();
            assert!(e.contains(line), "{e}");
        };
        refused(format!("{k}\tmaybe\n"), ":1:");
        // A key that could never match: upper case, too short, a stray space.
        refused("0123456789AB\tsame\n".to_string(), ":1:");
        refused("abc\tsame\n".to_string(), ":1:");
        refused(format!("# c\n {k}\tsame\n"), ":2:");
        // The same hit judged two ways.
        refused(format!("{k}\tsame\n{k}\tdifferent\n"), ":2: ");
    }
}
