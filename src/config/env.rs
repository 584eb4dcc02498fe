//! The environment overlay: `QM__SECTION__KEY=value` sets `section.key` before the config is
//! read, so containers configure the gateway without a file.

use super::{ConfigError, ENV_PREFIX};

/// Sets `a.b.c` (from `A__B__C`) in the table. The value is read as a TOML value when it
/// parses as one (numbers, booleans, arrays), else as a string.
pub(super) fn overlay(root: &mut toml::Table, key: &str, raw: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = key.split("__").map(|s| s.to_ascii_lowercase()).collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Invalid {
            path: format!("{ENV_PREFIX}{key}"),
            message: "empty path segment".into(),
        });
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let (last, parents) = path
        .split_last()
        .expect("split yields at least one segment");
    let mut table = root;
    for (i, segment) in parents.iter().enumerate() {
        let entry = table
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| ConfigError::Invalid {
            path: path[..=i].join("."),
            message: format!(
                "{ENV_PREFIX}{key} addresses a key inside a value that is not a table"
            ),
        })?;
    }
    table.insert(last.clone(), value);
    Ok(())
}
