//! The `quartermaster` binary: key management, config errors, and SIGTERM shutdown.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn qm(db: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quartermaster"));
    c.env("QM__DATABASE__URL", db)
        .env_remove("QM_CONFIG")
        .env("RUST_LOG", "info");
    c
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn keys_create_list_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("k.db").display());
    let (ok, key, _) = run(qm(&db).args(["keys", "create", "--tenant", "acme", "--name", "ci"]));
    assert!(ok);
    let key = key.trim().to_string();
    assert!(key.starts_with("qm_") && key.len() == 67, "{key}");
    let (ok, list, _) = run(qm(&db).args(["keys", "list"]));
    assert!(ok);
    assert!(
        list.contains("acme") && list.contains(&key[..11]) && list.contains("active"),
        "{list}"
    );
    assert!(!list.contains(&key[11..]), "the secret is never listed");
    let (ok, out, _) = run(qm(&db).args(["keys", "revoke", &key[..11]]));
    assert!(ok, "{out}");
    let (_, list, _) = run(qm(&db).args(["keys", "list"]));
    assert!(list.contains("revoked"), "{list}");
    let (ok, _, err) = run(qm(&db).args(["keys", "revoke", "qm_nothing"]));
    assert!(!ok && err.contains("no API key"), "{err}");
}

#[test]
fn unknown_config_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nprot = 8080\n").unwrap();
    let (ok, _, err) = run(qm("sqlite://unused.db")
        .arg("--config")
        .arg(&path)
        .arg("serve"));
    assert!(!ok);
    assert!(err.contains("prot"), "{err}");
}

#[test]
fn serve_shuts_down_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    let mut child = qm(&db)
        .args(["serve"])
        .env("QM__SERVER__PORT", "0")
        .env("QM__LOG__FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        assert!(Instant::now() < deadline, "no listening line");
        let line = lines.next().expect("server logs").unwrap();
        if line.contains("quartermaster listening") {
            let v: serde_json::Value = serde_json::from_str(&line).expect("JSON logs");
            break v["addr"].as_str().unwrap().to_string();
        }
    };
    let health = std::net::TcpStream::connect(&addr);
    assert!(health.is_ok(), "listening on {addr}");
    drop(health);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "clean exit: {exit:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("request log drained")),
        "{rest:?}"
    );
}
