//! Runs PDF extraction in a helper process with hard limits, so that nothing a PDF does can
//! reach the gateway: a parser that recurses until the stack is gone, panics, loops, or
//! inflates a bomb ends only the helper, and the document gets a 4xx.
//!
//! The helper is the gateway's own executable (`quartermaster __extract-pdf`, see `pdf.rs`),
//! started with an empty environment, its address space, CPU time, file sizes and core
//! dumps capped by `setrlimit`, and killed if it runs past its wall-clock limit. At most
//! `max_concurrent` helpers run at once; more wait their turn.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::ExtractError;
use super::pdf::{EXIT_CORRUPT, EXIT_OK, EXIT_TOO_LARGE, HELPER_ARG};

/// Limits on the extraction of one document (`[rag.extract]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractConfig {
    /// Most text one document may yield (UTF-8 bytes, after extraction).
    pub max_text_bytes: usize,
    /// Most bytes a PDF's compressed streams may inflate to, in total.
    pub max_decompressed_bytes: u64,
    /// Address space of the PDF helper process.
    pub pdf_memory_bytes: u64,
    /// Wall-clock (and CPU) time one PDF may take.
    pub pdf_timeout_secs: u64,
    /// Helpers running at once.
    pub pdf_max_concurrent: usize,
    /// The executable to run as the helper; by default this binary (or, from a test
    /// binary, the `quartermaster` binary built beside it).
    pub pdf_helper: Option<PathBuf>,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        Self {
            max_text_bytes: 16 << 20,
            max_decompressed_bytes: 128 << 20,
            pdf_memory_bytes: 1 << 30,
            pdf_timeout_secs: 60,
            pdf_max_concurrent: 2,
            pdf_helper: None,
        }
    }
}

impl ExtractConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_text_bytes == 0 || self.max_decompressed_bytes == 0 {
            return Err(
                "rag.extract: max_text_bytes and max_decompressed_bytes must be > 0".into(),
            );
        }
        if self.pdf_memory_bytes < 64 << 20 {
            return Err("rag.extract.pdf_memory_bytes must be at least 64 MiB".into());
        }
        if self.pdf_timeout_secs == 0 || self.pdf_max_concurrent == 0 {
            return Err("rag.extract: pdf_timeout_secs and pdf_max_concurrent must be > 0".into());
        }
        Ok(())
    }
}

/// Starts helpers; shared by every extraction of a process.
#[derive(Clone)]
pub struct PdfSandbox {
    config: ExtractConfig,
    slots: Arc<(Mutex<usize>, Condvar)>,
}

impl PdfSandbox {
    pub fn new(config: ExtractConfig) -> Self {
        let slots = Arc::new((Mutex::new(config.pdf_max_concurrent), Condvar::new()));
        Self { config, slots }
    }

    pub fn config(&self) -> &ExtractConfig {
        &self.config
    }

    /// The PDF's text. Blocks (call from a blocking thread) until a helper slot is free and
    /// the helper has finished or been killed.
    pub fn extract(&self, bytes: &[u8]) -> Result<String, ExtractError> {
        let helper = helper_path(self.config.pdf_helper.as_deref())?;
        let _slot = Slot::take(&self.slots);
        let started = Instant::now();
        let outcome = run_helper(&helper, bytes, &self.config);
        metrics::histogram!("qm_rag_pdf_extract_seconds").record(started.elapsed().as_secs_f64());
        let label = match &outcome {
            Ok(_) => "ok",
            Err(ExtractError::TooLarge(_)) => "too_large",
            Err(_) => "failed",
        };
        metrics::counter!("qm_rag_pdf_extractions_total", "outcome" => label).increment(1);
        outcome
    }
}

/// A helper slot, returned on drop.
struct Slot<'a>(&'a (Mutex<usize>, Condvar));

impl<'a> Slot<'a> {
    fn take(slots: &'a (Mutex<usize>, Condvar)) -> Self {
        let (free, cv) = slots;
        let mut free = free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = cv.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Slot(slots)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let (free, cv) = self.0;
        *free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        cv.notify_one();
    }
}

/// The configured helper, else this executable when it is the gateway, else the gateway
/// binary next to (or one folder above) a test binary in cargo's target folder.
fn helper_path(configured: Option<&Path>) -> Result<PathBuf, ExtractError> {
    if let Some(p) = configured {
        return Ok(p.to_path_buf());
    }
    let missing = || {
        ExtractError::Internal(
            "the PDF helper executable was not found: set rag.extract.pdf_helper".into(),
        )
    };
    let exe = std::env::current_exe().map_err(|_| missing())?;
    let name = format!("quartermaster{}", std::env::consts::EXE_SUFFIX);
    if exe.file_name().is_some_and(|n| n == name.as_str()) {
        return Ok(exe);
    }
    let dir = exe.parent().ok_or_else(missing)?;
    [
        dir.join(&name),
        dir.parent().map(|d| d.join(&name)).unwrap_or_default(),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .ok_or_else(missing)
}

/// Longest stderr kept from a helper (its reason, or a panic message).
const MAX_STDERR: u64 = 16 << 10;

fn run_helper(helper: &Path, bytes: &[u8], config: &ExtractConfig) -> Result<String, ExtractError> {
    let timeout = Duration::from_secs(config.pdf_timeout_secs);
    let mut command = Command::new(helper);
    command
        .arg(HELPER_ARG)
        .arg(config.max_decompressed_bytes.to_string())
        .arg(config.max_text_bytes.to_string())
        .env_clear()
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    limit_child(
        &mut command,
        config.pdf_memory_bytes,
        config.pdf_timeout_secs,
    );
    let mut child = spawn(&mut command).map_err(|e| {
        ExtractError::Internal(format!("starting the PDF helper {}: {e}", helper.display()))
    })?;
    // Feed and drain on threads so a helper that stops reading (or floods its output)
    // cannot block us; the wait below is what is bounded.
    let input = bytes.to_vec();
    let mut stdin = child.stdin.take().expect("piped stdin");
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input); // a helper that exits early closes the pipe
    });
    let stdout = child.stdout.take().expect("piped stdout");
    let text_cap = config.max_text_bytes as u64 + 1;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.take(text_cap).read_to_end(&mut out);
        out
    });
    let stderr = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut err = Vec::new();
        let _ = stderr.take(MAX_STDERR).read_to_end(&mut err);
        err
    });
    let status = wait_or_kill(&mut child, timeout);
    let _ = feeder.join();
    let out = reader.join().unwrap_or_default();
    let err = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    let Some(status) = status else {
        return Err(ExtractError::CorruptPdf(format!(
            "extraction took longer than {} s (rag.extract.pdf_timeout_secs)",
            config.pdf_timeout_secs
        )));
    };
    classify(status, out, &err, config)
}

/// Spawns, retrying briefly on ETXTBSY: an executable written a moment ago can still be
/// open for writing in a child another thread has forked and not yet exec'd.
fn spawn(command: &mut Command) -> std::io::Result<Child> {
    let mut attempt = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 20 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Waits for the helper until `timeout`, then kills it; `None` when it had to be killed.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

fn classify(
    status: ExitStatus,
    out: Vec<u8>,
    err: &str,
    config: &ExtractConfig,
) -> Result<String, ExtractError> {
    let reason = err.trim();
    match status.code() {
        Some(EXIT_OK) => {
            if out.len() > config.max_text_bytes {
                return Err(ExtractError::TooLarge(format!(
                    "the document's text exceeds {} bytes (rag.extract.max_text_bytes)",
                    config.max_text_bytes
                )));
            }
            String::from_utf8(out)
                .map_err(|_| ExtractError::CorruptPdf("the extracted text is not UTF-8".into()))
        }
        Some(EXIT_TOO_LARGE) => Err(ExtractError::TooLarge(reason.to_string())),
        Some(EXIT_CORRUPT) => Err(ExtractError::CorruptPdf(reason.to_string())),
        _ if reason.contains("overflowed its stack") => Err(ExtractError::CorruptPdf(
            "the PDF is nested too deeply to parse (the parser ran out of stack)".into(),
        )),
        _ if reason.contains("memory allocation of") => Err(ExtractError::TooLarge(format!(
            "extracting the PDF needs more than {} MiB of memory (rag.extract.pdf_memory_bytes)",
            config.pdf_memory_bytes >> 20
        ))),
        _ if reason.contains("panicked") => Err(ExtractError::CorruptPdf(format!(
            "the PDF parser failed on this file: {}",
            panic_message(reason)
        ))),
        _ => {
            tracing::warn!(?status, stderr = %reason, "PDF helper ended abnormally");
            Err(ExtractError::CorruptPdf(format!(
                "the PDF parser crashed on this file ({})",
                describe(status)
            )))
        }
    }
}

/// The line after Rust's "thread '...' panicked at FILE:LINE:COL:" header.
fn panic_message(stderr: &str) -> String {
    let mut lines = stderr.lines().skip_while(|l| !l.contains("panicked"));
    lines.next();
    let message = lines.next().unwrap_or("").trim();
    let message: String = message.chars().take(200).collect();
    if message.is_empty() {
        "it panicked".into()
    } else {
        message
    }
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return match signal {
                libc::SIGXCPU => "CPU time limit".into(),
                libc::SIGSEGV => "segmentation fault".into(),
                libc::SIGABRT => "aborted".into(),
                libc::SIGKILL => "killed".into(),
                s => format!("signal {s}"),
            };
        }
    }
    format!("exit status {}", status.code().unwrap_or(-1))
}

/// Caps the helper's address space, CPU seconds, file writes and core dumps before it
/// starts its program.
#[cfg(unix)]
fn limit_child(command: &mut Command, memory_bytes: u64, cpu_secs: u64) {
    use std::os::unix::process::CommandExt;
    let limits = [
        (libc::RLIMIT_AS, memory_bytes),
        // The wall-clock timeout kills it anyway; this bounds what a stopped clock would not.
        (libc::RLIMIT_CPU, cpu_secs + 1),
        (libc::RLIMIT_FSIZE, 0),
        (libc::RLIMIT_CORE, 0),
    ];
    // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            for (resource, value) in limits {
                let limit = libc::rlimit {
                    rlim_cur: value as libc::rlim_t,
                    rlim_max: value as libc::rlim_t,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

#[cfg(not(unix))]
fn limit_child(_: &mut Command, _: u64, _: u64) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_read_from_the_helpers_stderr() {
        let stderr =
            "\nthread 'main' panicked at src/x.rs:1:2:\nindex out of bounds\nnote: run with\n";
        assert_eq!(panic_message(stderr), "index out of bounds");
        assert_eq!(
            panic_message("thread 'main' panicked at a:1:1:"),
            "it panicked"
        );
    }

    /// A helper script in a temp dir, run as the configured helper.
    fn script(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("helper.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn sandbox_with(helper: PathBuf, timeout_secs: u64) -> PdfSandbox {
        PdfSandbox::new(ExtractConfig {
            pdf_helper: Some(helper),
            pdf_timeout_secs: timeout_secs,
            ..ExtractConfig::default()
        })
    }

    #[test]
    fn a_helper_that_runs_too_long_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = sandbox_with(script(dir.path(), "exec sleep 30"), 1);
        let started = Instant::now();
        let err = sandbox.extract(b"%PDF-1.4").unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            matches!(&err, ExtractError::CorruptPdf(m) if m.contains("longer than 1 s")),
            "{err:?}"
        );
    }

    #[test]
    fn a_crashing_helper_is_a_corrupt_document() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = sandbox_with(script(dir.path(), "kill -SEGV $$"), 10);
        let err = sandbox.extract(b"%PDF-1.4").unwrap_err();
        assert!(
            matches!(&err, ExtractError::CorruptPdf(m) if m.contains("segmentation fault")),
            "{err:?}"
        );
        let sandbox = sandbox_with(
            script(
                dir.path(),
                "echo \"thread 'main' has overflowed its stack\" >&2; kill -ABRT $$",
            ),
            10,
        );
        let err = sandbox.extract(b"%PDF-1.4").unwrap_err();
        assert!(
            matches!(&err, ExtractError::CorruptPdf(m) if m.contains("nested too deeply")),
            "{err:?}"
        );
    }

    #[test]
    fn the_helpers_output_and_codes_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = sandbox_with(script(dir.path(), "cat >/dev/null; printf 'page text'"), 10);
        assert_eq!(sandbox.extract(b"%PDF-1.4").unwrap(), "page text");
        let sandbox = sandbox_with(script(dir.path(), "echo 'too big' >&2; exit 3"), 10);
        assert!(matches!(
            sandbox.extract(b"%PDF-1.4"),
            Err(ExtractError::TooLarge(m)) if m == "too big"
        ));
    }

    #[test]
    fn a_missing_configured_helper_is_an_error_not_a_fallback() {
        let sandbox = PdfSandbox::new(ExtractConfig {
            pdf_helper: Some(PathBuf::from("/nonexistent/quartermaster")),
            ..ExtractConfig::default()
        });
        assert!(matches!(
            sandbox.extract(b"%PDF-1.4"),
            Err(ExtractError::Internal(m)) if m.contains("starting the PDF helper")
        ));
    }
}
