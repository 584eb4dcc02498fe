//! The request log's journal: every row is appended (one `write`, no `fsync`) to a file in
//! the spill folder before its request's response is finished, and the file is deleted once
//! its rows are in the database. A process killed with rows still in memory (`kill -9`, an
//! out-of-memory kill) leaves them in the page cache's copy of its journal, which the next
//! process to start on that folder adopts and replays like a spill file (`spill.rs`: files
//! no live process holds the lock of); rows carry their ids, so a row already written is
//! not written twice. (A power loss can still take the last rows: that needs an `fsync` per
//! request, which the log does not pay.)
//!
//! The journal is a run of segments, one file each, locked while this process lives; a new
//! segment begins every [`SEGMENT_ROWS`] rows or [`SEGMENT_AGE`], and a closed one is
//! deleted when every row appended to it is written (or moved to the spill file).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Row;

pub const SEGMENT_ROWS: u64 = 4096;
pub const SEGMENT_AGE: Duration = Duration::from_secs(2);

struct Segment {
    path: PathBuf,
    /// Open (and locked) until the segment is deleted.
    file: File,
    opened: Instant,
    /// Rows appended and not yet done.
    outstanding: u64,
    appended: u64,
}

struct State {
    next: u64,
    current: Option<(u64, Segment)>,
    closed: BTreeMap<u64, Segment>,
}

pub struct Journal {
    dir: PathBuf,
    /// This process's name in the segments' file names.
    run: String,
    state: Mutex<State>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("dir", &self.dir).finish()
    }
}

impl Journal {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            run: uuid::Uuid::now_v7().simple().to_string(),
            state: Mutex::new(State {
                next: 0,
                current: None,
                closed: BTreeMap::new(),
            }),
        })
    }

    fn new_segment(&self, seq: u64) -> std::io::Result<Segment> {
        let path = self
            .dir
            .join(format!("request-log-journal-{}-{seq:08}.jsonl", self.run));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        if !super::spill::try_lock(&file) {
            return Err(std::io::Error::other("cannot lock a new journal segment"));
        }
        Ok(Segment {
            path,
            file,
            opened: Instant::now(),
            outstanding: 0,
            appended: 0,
        })
    }

    /// Appends `row` and sets its segment. Errs when the file cannot be written (the row is
    /// then only in memory, as without a journal).
    pub fn append(&self, row: &mut Row) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&*row).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut state = self.state.lock().expect("journal lock");
        let rotate = state
            .current
            .as_ref()
            .is_some_and(|(_, s)| s.appended >= SEGMENT_ROWS || s.opened.elapsed() >= SEGMENT_AGE);
        if rotate {
            let (seq, segment) = state.current.take().expect("checked");
            if segment.outstanding == 0 {
                remove(segment);
            } else {
                state.closed.insert(seq, segment);
            }
        }
        if state.current.is_none() {
            let seq = state.next;
            state.next += 1;
            state.current = Some((seq, self.new_segment(seq)?));
        }
        let (seq, segment) = state.current.as_mut().expect("made above");
        // One write of the whole line: O_APPEND keeps lines whole.
        segment.file.write_all(&line)?;
        segment.outstanding += 1;
        segment.appended += 1;
        row.segment = Some(*seq);
        Ok(())
    }

    /// Notes rows as written (or kept elsewhere); deletes closed segments left with none.
    pub fn done<'a>(&self, rows: impl IntoIterator<Item = &'a Row>) {
        let mut state = self.state.lock().expect("journal lock");
        let mut emptied = Vec::new();
        for seq in rows.into_iter().filter_map(|r| r.segment) {
            if let Some((cur, s)) = state.current.as_mut()
                && *cur == seq
            {
                s.outstanding = s.outstanding.saturating_sub(1);
            } else if let Some(s) = state.closed.get_mut(&seq) {
                s.outstanding = s.outstanding.saturating_sub(1);
                if s.outstanding == 0 {
                    emptied.push(seq);
                }
            }
        }
        for seq in emptied {
            if let Some(s) = state.closed.remove(&seq) {
                remove(s);
            }
        }
    }

    /// Segments on disk now.
    #[cfg(test)]
    pub fn segments(&self) -> usize {
        let state = self.state.lock().expect("journal lock");
        state.closed.len() + usize::from(state.current.is_some())
    }
}

/// Deletes a segment's file, then closes it (dropping the lock last, so no other process
/// adopts a file about to go).
fn remove(segment: Segment) {
    if let Err(e) = std::fs::remove_file(&segment.path) {
        tracing::warn!(error = %e, path = %segment.path.display(), "request log: cannot delete a journal segment");
    }
    drop(segment.file);
}

impl Drop for Journal {
    /// At a clean exit every row is written or spilled: what is left holds nothing needed.
    fn drop(&mut self) {
        let state = self.state.get_mut().expect("journal lock");
        let outstanding: u64 = state
            .current
            .iter()
            .map(|(_, s)| s)
            .chain(state.closed.values())
            .map(|s| s.outstanding)
            .sum();
        if outstanding > 0 {
            // Kept for the next start to replay.
            return;
        }
        for s in state
            .current
            .take()
            .map(|(_, s)| s)
            .into_iter()
            .chain(std::mem::take(&mut state.closed).into_values())
        {
            remove(s);
        }
    }
}
