//! The request log's overflow files: rows the database could not take during an outage,
//! beyond what the writer keeps in memory, appended as JSON lines (each batch flushed to
//! disk before it counts as kept) and replayed once the database is back. Rows carry their
//! ids, and inserts skip ids already present, so a crash during a replay re-inserts
//! nothing twice; a torn last line (a crash mid-append) is skipped.
//!
//! Each process writes a file of its own in the spill folder and holds an exclusive lock
//! on it, so replicas sharing a folder never write, replay or empty each other's file. A
//! file nobody holds is an earlier run's: it is adopted (its rows moved into this process's
//! file) at start and replayed with it.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::Row;

const EXTENSION: &str = "jsonl";

/// An exclusive advisory lock, held until the file is closed; false if another holds it.
#[cfg(unix)]
pub(super) fn try_lock(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[cfg(not(unix))]
pub(super) fn try_lock(_: &File) -> bool {
    true
}

pub(super) struct Spill {
    path: PathBuf,
    file: Option<File>,
    /// Rows in the file (counted at open and on every append).
    pub rows: u64,
}

impl Spill {
    /// Creates this process's spill file in `dir` (locked), then adopts the rows of files
    /// no live process holds.
    pub fn open_in(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!(
            "request-log-{}.{EXTENSION}",
            uuid::Uuid::now_v7().simple()
        ));
        let mut spill = Self::open(&path)?;
        if !try_lock(spill.file.as_ref().expect("just opened")) {
            return Err(std::io::Error::other("cannot lock a new spill file"));
        }
        for entry in std::fs::read_dir(dir)? {
            let other = entry?.path();
            if other == path || other.extension().is_none_or(|e| e != EXTENSION) {
                continue;
            }
            let Ok(file) = OpenOptions::new().read(true).write(true).open(&other) else {
                continue;
            };
            if !try_lock(&file) {
                continue; // a live process's file
            }
            let orphan = Spill {
                path: other.clone(),
                file: Some(file),
                rows: 0,
            };
            let (rows, _) = orphan.read_all()?;
            if !rows.is_empty() {
                spill.append(&rows)?;
            }
            // Moved (and flushed): the orphan can go. A crash before this line leaves the
            // rows in both files, which the replay's skip of known ids absorbs.
            std::fs::remove_file(&other)?;
        }
        Ok(spill)
    }

    /// Opens (creating if needed) a spill file and counts the rows in it.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let rows = BufReader::new(&file)
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .count() as u64;
        Ok(Self {
            path: path.to_path_buf(),
            file: Some(file),
            rows,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends rows and flushes them to disk.
    pub fn append(&mut self, rows: &[Row]) -> std::io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("spill closed"))?;
        let mut buf = Vec::with_capacity(rows.len() * 320);
        for row in rows {
            serde_json::to_writer(&mut buf, row).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        // A torn earlier append may have left a line without its newline: start clean.
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            let mut reader = &*file;
            reader.seek(SeekFrom::Start(len - 1))?;
            std::io::Read::read_exact(&mut reader, &mut last)?;
            if last[0] != b'\n' {
                buf.insert(0, b'\n');
            }
        }
        file.write_all(&buf)?;
        file.sync_data()?;
        self.rows += rows.len() as u64;
        Ok(())
    }

    /// Every whole row in the file (unreadable lines skipped and counted).
    pub fn read_all(&self) -> std::io::Result<(Vec<Row>, usize)> {
        let file = File::open(&self.path)?;
        let mut rows = Vec::new();
        let mut bad = 0;
        for line in BufReader::new(file).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Row>(&line) {
                Ok(r) => rows.push(r),
                Err(_) => bad += 1,
            }
        }
        Ok((rows, bad))
    }

    /// Empties the file once its rows are in the database.
    pub fn clear(&mut self) -> std::io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("spill closed"))?;
        file.set_len(0)?;
        file.sync_data()?;
        self.rows = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize) -> Row {
        Row {
            id: format!("log_{i}"),
            request_id: format!("req_{i}"),
            model: "m".into(),
            status: "ok".into(),
            http_status: 200,
            ..Row::default()
        }
    }

    #[test]
    fn rows_survive_reopening_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.spill");
        let mut spill = Spill::open(&path).unwrap();
        spill.append(&[row(1), row(2)]).unwrap();
        drop(spill);
        // A crash mid-append leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"id":"log_3","requ"#).unwrap();
        drop(f);
        let mut spill = Spill::open(&path).unwrap();
        spill.append(&[row(4)]).unwrap();
        let (rows, bad) = spill.read_all().unwrap();
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["log_1", "log_2", "log_4"]);
        assert_eq!(bad, 1);
        spill.clear().unwrap();
        assert_eq!(spill.read_all().unwrap().0.len(), 0);
        assert_eq!(Spill::open(&path).unwrap().rows, 0);
    }

    #[test]
    fn an_earlier_runs_file_is_adopted_and_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut live = Spill::open_in(dir.path()).unwrap();
        live.append(&[row(1)]).unwrap();
        // An earlier run's file: nobody holds it.
        let mut old = Spill::open(&dir.path().join("request-log-old.jsonl")).unwrap();
        old.append(&[row(2), row(3)]).unwrap();
        drop(old);
        let mine = Spill::open_in(dir.path()).unwrap();
        let ids: Vec<String> = mine
            .read_all()
            .unwrap()
            .0
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["log_2", "log_3"]);
        assert_eq!(mine.rows, 2);
        assert!(!dir.path().join("request-log-old.jsonl").exists());
        // The live process's file is untouched.
        assert_eq!(live.read_all().unwrap().0.len(), 1);
        live.append(&[row(4)]).unwrap();
    }
}
