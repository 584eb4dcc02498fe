//! Writing one Parquet file whole or not at all: rows go to a hidden temporary file in the
//! same folder, which is flushed, synced and renamed over the final name (then the folder
//! synced). A process killed mid-write leaves only the temporary file (`.*.inprogress`,
//! uniquely named, which loaders' `*.parquet` globs do not match), removed by a later export
//! once it is an hour old.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::parser::parse_message_type;

/// One column of a row group, in the schema's order.
#[derive(Debug)]
pub enum Col {
    I64(Vec<i64>),
    OptI64(Vec<Option<i64>>),
    F64(Vec<f64>),
    OptF64(Vec<Option<f64>>),
    Bool(Vec<bool>),
    Str(Vec<String>),
    OptStr(Vec<Option<String>>),
}

fn defs<T>(v: &[Option<T>]) -> Vec<i16> {
    v.iter().map(|x| i16::from(x.is_some())).collect()
}

fn write_col(
    rg: &mut SerializedRowGroupWriter<'_, File>,
    col: &Col,
) -> parquet::errors::Result<()> {
    let mut w = rg.next_column()?.ok_or_else(|| {
        parquet::errors::ParquetError::General("more columns than the schema".into())
    })?;
    match col {
        Col::I64(v) => {
            w.typed::<Int64Type>().write_batch(v, None, None)?;
        }
        Col::OptI64(v) => {
            let vals: Vec<i64> = v.iter().flatten().copied().collect();
            w.typed::<Int64Type>()
                .write_batch(&vals, Some(&defs(v)), None)?;
        }
        Col::F64(v) => {
            w.typed::<DoubleType>().write_batch(v, None, None)?;
        }
        Col::OptF64(v) => {
            let vals: Vec<f64> = v.iter().flatten().copied().collect();
            w.typed::<DoubleType>()
                .write_batch(&vals, Some(&defs(v)), None)?;
        }
        Col::Bool(v) => {
            w.typed::<BoolType>().write_batch(v, None, None)?;
        }
        Col::Str(v) => {
            let vals: Vec<ByteArray> = v.iter().map(|s| ByteArray::from(s.as_str())).collect();
            w.typed::<ByteArrayType>().write_batch(&vals, None, None)?;
        }
        Col::OptStr(v) => {
            let vals: Vec<ByteArray> = v
                .iter()
                .flatten()
                .map(|s| ByteArray::from(s.as_str()))
                .collect();
            w.typed::<ByteArrayType>()
                .write_batch(&vals, Some(&defs(v)), None)?;
        }
    }
    w.close()
}

/// A file being written: row groups appended, then [`PartFile::commit`].
pub struct PartFile {
    writer: Option<SerializedFileWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
    pub rows: u64,
}

impl PartFile {
    pub fn create(path: &Path, schema: &str) -> anyhow::Result<Self> {
        let dir = path.parent().expect("a file in a folder");
        std::fs::create_dir_all(dir)?;
        let name = path.file_name().expect("a file name").to_string_lossy();
        let tmp = dir.join(format!(
            ".{name}.{}.inprogress",
            uuid::Uuid::new_v4().simple()
        ));
        let schema = Arc::new(parse_message_type(schema)?);
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_created_by("quartermaster".into())
                .build(),
        );
        let writer = SerializedFileWriter::new(File::create(&tmp)?, schema, props)?;
        Ok(Self {
            writer: Some(writer),
            tmp,
            path: path.to_path_buf(),
            rows: 0,
        })
    }

    /// One row group: every column, each as long as the others.
    pub fn append(&mut self, cols: &[Col]) -> anyhow::Result<()> {
        let w = self.writer.as_mut().expect("open");
        let mut rg = w.next_row_group()?;
        for c in cols {
            write_col(&mut rg, c)?;
        }
        let meta = rg.close()?;
        self.rows += meta.num_rows() as u64;
        Ok(())
    }

    /// Flushed, synced, renamed into place, the folder synced.
    pub fn commit(mut self) -> anyhow::Result<u64> {
        let w = self.writer.take().expect("open");
        let file = w.into_inner()?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(self.rows)
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Removes temporary files a killed export left under `dir` more than `older_than` ago
/// (younger ones may be another export's, still running).
pub fn remove_leftovers(dir: &Path, older_than: std::time::Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let old = || {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= older_than)
        };
        if p.is_dir() {
            remove_leftovers(&p, older_than);
        } else if p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(".inprogress"))
            && old()
        {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Writes `bytes` to `path` whole or not at all.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("a file in a folder");
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().expect("a file name").to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.{}.inprogress",
        uuid::Uuid::new_v4().simple()
    ));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}
