//! Hostile PDFs against the real binary: every file of the corpus (a Form XObject that
//! draws itself, page-tree and reference cycles, 50k-deep nesting, truncated and garbage
//! files) is refused with a 4xx for that document alone, by multipart and by base64 JSON;
//! the process stays up and serves the next document; a decompression bomb is refused with
//! `document_too_large` without the gateway's memory growing; a PDF whose parse needs more
//! memory than the helper may have is refused the same way.

use std::time::Duration;

use base64::Engine;
use quartermaster::rag::extract::hostile;
use serde_json::{Value, json};

use crate::common::binary::{Gateway, model_dir};

fn config(extra: &str) -> String {
    format!(
        "[embeddings]\nmodel_dir = \"{}\"\n[local]\nenabled = false\n[cache]\nenabled = false\n[rate_limit]\nenabled = false\n{extra}",
        model_dir().display()
    )
}

async fn upload_multipart(gw: &Gateway, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes)
            .file_name(format!("{name}.pdf"))
            .mime_str("application/pdf")
            .unwrap(),
    );
    let r = reqwest::Client::new()
        .post(format!("{}/v1/documents", gw.url))
        .bearer_auth(&gw.key)
        .multipart(form)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{name}: the gateway did not answer: {e}\n{}", gw.log_text()));
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn upload_json(gw: &Gateway, name: &str, bytes: &[u8]) -> (u16, Value) {
    let body = json!({
        "id": name,
        "format": "pdf",
        "content_base64": base64::engine::general_purpose::STANDARD.encode(bytes),
    });
    let r = reqwest::Client::new()
        .post(format!("{}/v1/documents", gw.url))
        .bearer_auth(&gw.key)
        .json(&body)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{name}: the gateway did not answer: {e}\n{}", gw.log_text()));
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn hostile_pdfs_fail_alone_and_the_gateway_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("qm.db").display());
    let mut gw = Gateway::start(dir.path(), &db, &config("")).await;
    // The 650-byte file that used to overflow the stack of a runtime worker.
    assert!(hostile::self_drawing_xobject().len() < 700);
    let mut codes = Vec::new();
    for (name, bytes) in hostile::corpus() {
        for via in ["multipart", "json"] {
            let (status, body) = match via {
                "multipart" => upload_multipart(&gw, name, bytes.clone()).await,
                _ => upload_json(&gw, name, &bytes).await,
            };
            assert!(
                gw.alive(),
                "{name} ({via}) took the gateway down:\n{}",
                gw.log_text()
            );
            assert_eq!(status, 422, "{name} ({via}): {body}");
            // A parser that gets through a cycle finds no text; the rest fail as corrupt.
            let code = body["error"]["code"].as_str().unwrap_or_default();
            assert!(
                code == "corrupt_document" || code == "empty_document",
                "{name} ({via}): {body}"
            );
            codes.push(format!("{name}: {}", body["error"]["message"]));
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{name}: {body}"
            );
        }
    }
    eprintln!("{}", codes.join("\n"));
    // The next document, and the next request, are served as always.
    let (status, body) = upload_multipart(
        &gw,
        "fine",
        hostile::plain("Quartermaster survives hostile files."),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["status"], "created", "{body}");
    let health = reqwest::get(format!("{}/healthz", gw.url)).await.unwrap();
    assert_eq!(health.status(), 200);
    gw.terminate(Duration::from_secs(20));
}

/// A 1 MiB file inflating to 1 GiB: refused by the inflation cap before anything is
/// inflated for real; the gateway's peak memory barely moves.
#[tokio::test]
async fn a_decompression_bomb_is_refused_without_memory_growth() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("qm.db").display());
    let bomb = hostile::inflation_bomb(1 << 30);
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    let mut gw = Gateway::start(dir.path(), &db, &config("")).await;
    let peak_before = gw.status_kib("VmHWM");
    let (status, body) = upload_multipart(&gw, "bomb", bomb.clone()).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "document_too_large");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_decompressed_bytes"),
        "{body}"
    );
    let (status, body) = upload_json(&gw, "bomb", &bomb).await;
    assert_eq!(status, 413, "{body}");
    let grown_kib = gw.status_kib("VmHWM").saturating_sub(peak_before);
    assert!(
        grown_kib < 100 * 1024,
        "the gateway's peak memory grew by {grown_kib} KiB"
    );
    assert!(gw.alive());
    gw.terminate(Duration::from_secs(20));
}

/// With the inflation cap raised past a bomb, the helper's own memory limit stops it: the
/// document is still refused as too large, and the gateway is untouched.
#[tokio::test]
async fn the_helpers_memory_limit_refuses_what_the_caps_let_through() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("qm.db").display());
    let extra =
        "[rag.extract]\nmax_decompressed_bytes = 4294967296\npdf_memory_bytes = 268435456\n";
    let mut gw = Gateway::start(dir.path(), &db, &config(extra)).await;
    let peak_before = gw.status_kib("VmHWM");
    let (status, body) = upload_multipart(&gw, "bomb", hostile::inflation_bomb(768 << 20)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "document_too_large");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pdf_memory_bytes"),
        "{body}"
    );
    assert!(gw.status_kib("VmHWM").saturating_sub(peak_before) < 100 * 1024);
    assert!(gw.alive());
    gw.terminate(Duration::from_secs(20));
}
