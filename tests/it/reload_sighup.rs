//! SIGHUP reloads the config of the real binary (file polling off, so only the signal can).

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{MockUpstream, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_limits_without_a_restart() {
    quartermaster::install_crypto_provider();
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("hup.db").display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!(
        "[server]\nport = {port}\nconfig_poll_secs = 0\n[database]\nurl = \"{db}\"\n\
         [embeddings]\nenabled = false\n[local]\nenabled = false\n[rate_limit]\nenabled = false\n[cache]\nenabled = false\n\
         [providers.mock]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key = \"sk\"\n\
         [models.mock-ok]\nprovider = \"mock\"\n",
        mock.url
    );
    let config = dir.path().join("qm.toml");
    std::fs::write(&config, &base).unwrap();
    let bin = env!("CARGO_BIN_EXE_quartermaster");
    let key = Command::new(bin)
        .args([
            "--config",
            config.to_str().unwrap(),
            "keys",
            "create",
            "--tenant",
            "hup",
        ])
        .output()
        .unwrap();
    let key = String::from_utf8(key.stdout).unwrap().trim().to_string();
    let child = KillOnDrop(
        Command::new(bin)
            .args(["--config", config.to_str().unwrap(), "serve"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let chat = || {
        http.post(&url)
            .bearer_auth(&key)
            .json(&common::chat_body("mock-ok", false))
            .send()
    };
    wait_for(10, "the gateway to start", || async {
        chat().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    std::fs::write(
        &config,
        format!("{base}[limits.tenant_default]\nrequests_per_minute = 1\n"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..3 {
        assert_eq!(
            chat().await.unwrap().status(),
            200,
            "no reload without the signal"
        );
    }
    let sent = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    wait_for(5, "SIGHUP to apply the new limit", || async {
        chat().await.unwrap().status() == 429
    })
    .await;
}

/// The server process dies with the test, pass or fail.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
