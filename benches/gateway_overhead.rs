//! Gateway overhead against a local mock upstream: chat completions streaming and not, and
//! each other door streamed: the Responses API (stored and not), the AI SDK's UI message
//! stream (`/api/chat`) and Anthropic's Messages API. The gateway translates each into the
//! same chat stream; their direct and bare-proxy peers are that chat stream, so each row is
//! what its door adds. One more row sends the non-streamed chat with an end user's JWT
//! (ES256, its issuer's JWKS fetched once and cached) instead of an API key: beside the
//! non-stream row, what verifying a token costs. Two more send the non-streamed chat through
//! gateways with an integration on: analytics (PostHog batches) and OpenTelemetry traces
//! (every request sampled, its spans exported over OTLP/HTTP to the mock).
//!
//! Starts a mock OpenAI upstream in this process and the release `quartermaster` binary as a
//! child process, then for each mode measures, open-loop at a fixed rate, the latency of
//! requests sent straight to the mock and through the gateway: the difference of the
//! percentiles is the added latency. The same requests also go through a bare proxy (this
//! bench binary re-run as a child: axum + reqwest, same runtime as the gateway, forwarding
//! bytes without parsing them): what any proxy hop on this stack and machine costs, the
//! floor under the gateway's figure. Then a closed loop finds the highest sustained rate,
//! and the gateway's RSS is sampled throughout.
//!
//! `cargo bench --bench gateway_overhead` (env: QM_BENCH_RATE=1000, QM_BENCH_SECS=10,
//! QM_BENCH_RUNS=3 runs per mode, median reported; QM_BENCH_SOAK_SECS=0 for the memory soak
//! at the same rate, e.g. 300; QM_BENCH_GATEWAY=PATH to measure another build of the gateway;
//! QM_BENCH_MODES="traces;analytics" to run only the rows whose label contains one of them).
//! Each phase also reports the CPU time (user + system) the bare proxy and the gateway spent
//! per request: steadier than a p99 on a shared machine, and what the tail grows from.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};

use common::{cpu_secs, env_or, pct, rss_kib, start_gateway};

async fn mock(body: Bytes) -> axum::response::Response {
    let req: Value = serde_json::from_slice(&body).unwrap();
    if req["stream"].as_bool().unwrap_or(false) {
        let mut out = String::new();
        for (i, w) in ["Hello", " there", "!"].iter().enumerate() {
            let c = json!({"id":"x","object":"chat.completion.chunk","created":1,"model":"m",
                "choices":[{"index":0,"delta":{"content":w},"finish_reason": if i == 2 {json!("stop")} else {Value::Null}}]});
            out.push_str(&format!("data: {c}\n\n"));
        }
        out.push_str("data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}\n\ndata: [DONE]\n\n");
        let stream = futures::stream::iter([Ok::<_, Infallible>(Bytes::from(out))]);
        axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(stream))
            .unwrap()
    } else {
        axum::Json(json!({"id":"x","object":"chat.completion","created":1,"model":"m",
            "choices":[{"index":0,"message":{"role":"assistant","content":"Hello there!"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}))
        .into_response()
    }
}

/// Open loop: one request every 1/rate seconds for `secs`, each timed to the last byte.
/// What one phase sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Stream,
    /// A streamed Responses API request to the gateway (stored, as by default); the mock and
    /// the bare proxy, which speak only chat completions, get the equivalent chat stream.
    Responses,
    /// The same with `store: false`: what the door costs without the stored response.
    ResponsesNoStore,
    /// `POST /api/chat` (the UI message stream; each answer runs in its own task).
    UiChat,
    /// `POST /v1/messages`, streamed, answered by the OpenAI-compatible mock.
    Messages,
    /// The non-streamed chat, authenticated by an end user's JWT instead of an API key.
    Jwt,
    /// The non-streamed chat through a second gateway that sends every request to PostHog
    /// (the mock's batch endpoint) as an analytics event.
    Analytics,
    /// The non-streamed chat through a gateway that records every request's spans and
    /// exports them over OTLP (to the mock's `/v1/traces`).
    Traced,
}

const MODES: usize = 9;

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Plain => "non-stream",
            Mode::Stream => "stream",
            Mode::Responses => "responses stream",
            Mode::ResponsesNoStore => "responses stream, store: false",
            Mode::UiChat => "ui message stream (/api/chat)",
            Mode::Messages => "messages stream (/v1/messages)",
            Mode::Jwt => "non-stream, end user's JWT (ES256)",
            Mode::Analytics => "non-stream, analytics on (PostHog batches)",
            Mode::Traced => "non-stream, traces on (OTLP, every request sampled)",
        }
    }

    /// The path and body of the request, to the gateway or to a peer.
    fn request(self, gateway: bool) -> (&'static str, String) {
        if gateway {
            match self {
                Mode::Responses | Mode::ResponsesNoStore => {
                    let store = self == Mode::Responses;
                    let body =
                        json!({"model": "m", "stream": true, "input": "Say hello", "store": store});
                    return ("/v1/responses", body.to_string());
                }
                Mode::UiChat => {
                    let body = json!({"id": "bench-chat", "trigger": "submit-message", "model": "m",
                        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Say hello"}]}]});
                    return ("/api/chat", body.to_string());
                }
                Mode::Messages => {
                    let body = json!({"model": "m", "stream": true, "max_tokens": 1024,
                        "messages": [{"role": "user", "content": "Say hello"}]});
                    return ("/v1/messages", body.to_string());
                }
                Mode::Plain | Mode::Stream | Mode::Jwt | Mode::Analytics | Mode::Traced => {}
            }
        }
        let body = json!({"model": "m", "stream": !matches!(self, Mode::Plain | Mode::Jwt | Mode::Analytics | Mode::Traced),
            "messages": [{"role": "user", "content": "Say hello"}]});
        ("/v1/chat/completions", body.to_string())
    }
}

async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    (mode, gateway): (Mode, bool),
    rate: u64,
    secs: u64,
) -> (Vec<f64>, usize) {
    let lat = Arc::new(Mutex::new(Vec::with_capacity((rate * secs) as usize)));
    let errors = Arc::new(Mutex::new(0usize));
    let (path, body) = mode.request(gateway);
    let origin = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    for _ in 0..rate * secs {
        tick.tick().await;
        let (client, url, key, body, lat, errors) = (
            client.clone(),
            url.to_string(),
            key.to_string(),
            body.clone(),
            lat.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let res = client
                .post(format!("{url}{path}"))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match res {
                Ok(r) if r.status().is_success() => {
                    let _ = r.bytes().await;
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    lat.lock()
                        .unwrap()
                        .push((ms, (t - origin).as_secs_f64() * 1e3));
                }
                _ => *errors.lock().unwrap() += 1,
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let timed = Arc::try_unwrap(lat).unwrap().into_inner().unwrap();
    // QM_BENCH_DUMP=DIR writes each request's start (ms into the run) and latency, to look
    // for periodic stalls.
    if let Ok(dir) = std::env::var("QM_BENCH_DUMP") {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{dir}/{:02}-{}-{}.tsv",
            N.fetch_add(1, Ordering::SeqCst),
            url.trim_start_matches("http://").replace([':', '.'], "_"),
            mode.label().replace(' ', "-")
        );
        let rows: String = timed
            .iter()
            .map(|(ms, at)| format!("{at:.3}\t{ms:.3}\n"))
            .collect();
        let _ = std::fs::write(name, rows);
    }
    let mut v: Vec<f64> = timed.into_iter().map(|(ms, _)| ms).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let e = *errors.lock().unwrap();
    (v, e)
}

/// Closed loop with `conc` workers for `secs`: requests per second completed.
async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    stream: bool,
    conc: usize,
    secs: u64,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let body =
        json!({"model":"m","stream":stream,"messages":[{"role":"user","content":"Say hello"}]})
            .to_string();
    let mut workers = Vec::new();
    for _ in 0..conc {
        let (client, url, key, body) = (
            client.clone(),
            url.to_string(),
            key.to_string(),
            body.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                if let Ok(r) = client
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                {
                    if r.bytes().await.is_ok() {
                        n += 1;
                    }
                }
            }
            n
        }));
    }
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    total as f64 / secs as f64
}

/// The bare proxy peer: forwards the request body to the mock and streams the answer back,
/// byte for byte. Runs in a child process on tokio's default multi-thread runtime, as the
/// gateway does.
fn bare_proxy(upstream: String) {
    use axum::extract::State;
    use axum::http::{StatusCode, header};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("listening {}", listener.local_addr().unwrap());
        let state = Arc::new((reqwest::Client::new(), upstream));
        let forward = |State(s): State<Arc<(reqwest::Client, String)>>, body: Bytes| async move {
            match s
                .0
                .post(&s.1)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(r) => {
                    let mut out = axum::response::Response::builder().status(r.status().as_u16());
                    if let Some(ct) = r.headers().get(header::CONTENT_TYPE) {
                        out = out.header(header::CONTENT_TYPE, ct.as_bytes());
                    }
                    out.body(Body::from_stream(r.bytes_stream())).unwrap()
                }
                Err(_) => StatusCode::BAD_GATEWAY.into_response(),
            }
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(forward))
            .with_state(state);
        // As the gateway does: without TCP_NODELAY each streamed write waits for a delayed ACK.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await.unwrap();
    });
}

/// The bare proxy child, killed when dropped.
struct Peer {
    child: std::process::Child,
    url: String,
}

impl Peer {
    fn start(upstream: &str) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .env("QM_BENCH_ROLE", "bare-proxy")
            .env("QM_BENCH_UPSTREAM", upstream)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .expect("bare proxy address");
        Self {
            child,
            url: format!("http://{addr}"),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An ES256 key as its issuer's JWKS, and a token it signed (for an hour, audience `bench`,
/// tenant `bench`).
fn bench_jwt(issuer: &str) -> (Value, String) {
    use base64::Engine;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = key.public_key().as_ref();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "bench", "alg": "ES256", "use": "sig",
        "x": b64(&point[1..33]), "y": b64(&point[33..65])}]});
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = b64(json!({"alg": "ES256", "kid": "bench", "typ": "JWT"})
        .to_string()
        .as_bytes());
    let claims = b64(
        json!({"iss": issuer, "aud": "bench", "sub": "bench-user", "org_id": "bench",
        "iat": now, "exp": now + 3600})
        .to_string()
        .as_bytes(),
    );
    let signing_input = format!("{header}.{claims}");
    let signature = key.sign(&rng, signing_input.as_bytes()).unwrap();
    (jwks, format!("{signing_input}.{}", b64(signature.as_ref())))
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if std::env::var("QM_BENCH_ROLE").as_deref() == Ok("bare-proxy") {
        return bare_proxy(std::env::var("QM_BENCH_UPSTREAM").unwrap());
    }
    let rate = env_or::<u64>("QM_BENCH_RATE", 1000);
    let secs = env_or::<u64>("QM_BENCH_SECS", 10);
    let soak = env_or::<u64>("QM_BENCH_SOAK_SECS", 0);
    let runs = env_or::<u64>("QM_BENCH_RUNS", 3).max(1);
    // The mock and the load generator share one runtime with 1 worker: the gateway process
    // gets the rest of this 2-core machine.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mock_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let issuer = "https://issuer.bench.test";
        let (jwks, jwt) = bench_jwt(issuer);
        let mock_app = Router::new()
            .route("/v1/chat/completions", post(mock))
            .route("/jwks.json", axum::routing::get(move || async move { axum::Json(jwks) }))
            .route("/batch/", post(|| async { "{\"status\": 1}" }))
            .route("/v1/traces", post(|| async { "" }));
        tokio::spawn(async move { axum::serve(listener, mock_app).await.unwrap() });
        let gw = start_gateway(
            &mock_url,
            &format!(
                "[cache]\nenabled = false\n[auth.jwt.bench]\nissuer = \"{issuer}\"\njwks_url = \"{}/jwks.json\"\n\
                 audience = [\"bench\"]\ntenant_claim = \"org_id\"\n",
                mock_url.trim_end_matches("/v1")
            ),
        );
        let gw_analytics = start_gateway(
            &mock_url,
            &format!(
                "[cache]\nenabled = false\n[analytics]\nprovider = \"posthog\"\nurl = \"{}\"\napi_key = \"phc_bench\"\n",
                mock_url.trim_end_matches("/v1")
            ),
        );
        let gw_traced = start_gateway(
            &mock_url,
            &format!(
                "[cache]\nenabled = false\n[tracing]\notlp_endpoint = \"{}/traces\"\n",
                mock_url
            ),
        );
        // The gateway each mode is sent to, and the credential it sends.
        let target = |mode: Mode| match mode {
            Mode::Analytics => &gw_analytics,
            Mode::Traced => &gw_traced,
            _ => &gw,
        };
        let credential = |mode: Mode| if mode == Mode::Jwt { jwt.as_str() } else { target(mode).key.as_str() };
        let peer = Peer::start(&format!("{mock_url}/chat/completions"));
        let pid = gw.child.id();
        let peer_pid = peer.child.id();
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
        let direct = mock_url.trim_end_matches("/v1").to_string();
        // Warm up connections on both paths.
        let _ = open_loop(&client, &direct, "", (Mode::Plain, false), 200, 1).await;
        let _ = open_loop(&client, &gw.url, &gw.key, (Mode::Plain, true), 200, 1).await;
        let _ = open_loop(&client, &peer.url, "", (Mode::Plain, false), 200, 1).await;
        // An older build (QM_BENCH_GATEWAY) may lack a door: its row is left out.
        let mut modes = vec![Mode::Plain, Mode::Stream];
        for door in [Mode::Responses, Mode::ResponsesNoStore, Mode::UiChat, Mode::Messages, Mode::Jwt, Mode::Analytics, Mode::Traced] {
            let (_, probe_errors) = open_loop(&client, &target(door).url, credential(door), (door, true), 20, 1).await;
            if probe_errors == 0 {
                modes.push(door);
            } else {
                println!("(this gateway build fails {}: no row for it)", door.label());
            }
        }
        // QM_BENCH_MODES=a;b keeps the rows whose label contains one of them (the plain
        // non-stream row always runs: the others are read beside it).
        if let Ok(only) = std::env::var("QM_BENCH_MODES") {
            let keep: Vec<&str> = only.split(';').map(str::trim).collect();
            modes.retain(|m| *m == Mode::Plain || keep.iter().any(|k| m.label().contains(k)));
        }
        let modes = &modes[..];
        let rss_start = rss_kib(pid);
        println!("gateway overhead: open loop at {rate} req/s for {secs} s per run (loopback; mock + load generator on 1 thread)");
        println!("| mode | direct p50 / p99 ms | bare proxy p50 / p99 ms | gateway p50 / p99 ms | bare proxy added p50 / p99 ms | gateway added p50 / p99 ms | CPU per request, bare proxy / gateway µs | errors |");
        println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
        // Each mode runs `runs` times (direct, bare proxy, gateway; alternating modes) and the
        // median of the runs is reported with every run: one noisy run on a shared 2-core
        // machine says little on its own.
        // (gateway, bare proxy) added (p50, p99) per run and mode.
        let mut added: [Vec<[(f64, f64); 2]>; MODES] = Default::default();
        // (bare proxy, gateway) CPU µs per request, per run and mode.
        let mut cpu_per_request: [Vec<(f64, f64)>; MODES] = Default::default();
        for run in 0..runs {
            for &mode in modes {
                let (d, de) = open_loop(&client, &direct, "", (mode, false), rate, secs).await;
                // CPU per request: the process's user + system time over the phase (what the
                // gateway's background work costs in that time included), per request sent;
                // NaN if /proc could not be read.
                let per_request = |before: Option<f64>, after: Option<f64>, sent: usize| {
                    before
                        .zip(after)
                        .map_or(f64::NAN, |(b, a)| (a - b) * 1e6 / sent.max(1) as f64)
                };
                let cpu = cpu_secs(peer_pid);
                let (b, be) = open_loop(&client, &peer.url, "", (mode, false), rate, secs).await;
                let b_cpu = per_request(cpu, cpu_secs(peer_pid), b.len() + be);
                let gpid = target(mode).child.id();
                let cpu = cpu_secs(gpid);
                let (g, ge) = open_loop(&client, &target(mode).url, credential(mode), (mode, true), rate, secs).await;
                let g_cpu = per_request(cpu, cpu_secs(gpid), g.len() + ge);
                let over = |x: &[f64]| (pct(x, 0.5) - pct(&d, 0.5), pct(x, 0.99) - pct(&d, 0.99));
                let (ga, ba) = (over(&g), over(&b));
                added[mode as usize].push([ga, ba]);
                cpu_per_request[mode as usize].push((b_cpu, g_cpu));
                println!(
                    "| {} (run {}) | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {:.0} / {:.0} | {} |",
                    mode.label(),
                    run + 1,
                    pct(&d, 0.5), pct(&d, 0.99), pct(&b, 0.5), pct(&b, 0.99), pct(&g, 0.5), pct(&g, 0.99),
                    ba.0, ba.1, ga.0, ga.1, b_cpu, g_cpu, de + be + ge
                );
            }
        }
        for &mode in modes {
            let runs = &added[mode as usize];
            let m = |i: usize, p99: bool| {
                common::median(runs.iter().map(|r| if p99 { r[i].1 } else { r[i].0 }).collect())
            };
            let cpu = &cpu_per_request[mode as usize];
            println!(
                "median of {} runs, {}: gateway added p50 {:.3} ms, p99 {:.3} ms; bare proxy added p50 {:.3} ms, p99 {:.3} ms; CPU per request: gateway {:.0} µs, bare proxy {:.0} µs",
                runs.len(),
                mode.label(),
                m(0, false), m(0, true), m(1, false), m(1, true),
                common::median(cpu.iter().map(|c| c.1).collect()),
                common::median(cpu.iter().map(|c| c.0).collect()),
            );
        }
        for stream in [false, true] {
            let rps = closed_loop(&client, &gw.url, &gw.key, stream, 64, secs).await;
            println!("max sustained ({}, 64 concurrent, closed loop): {rps:.0} req/s", if stream { "stream" } else { "non-stream" });
        }
        let rss_after = rss_kib(pid);
        println!("gateway RSS: {} KiB at start of measurement, {} KiB after", rss_start, rss_after);
        if soak > 0 {
            let mut samples = vec![];
            let per = 30.min(soak);
            for i in 0..soak.div_ceil(per) {
                let mode = if i % 2 == 1 { Mode::Stream } else { Mode::Plain };
                let (g, _) = open_loop(&client, &gw.url, &gw.key, (mode, true), rate, per).await;
                samples.push((rss_kib(pid), pct(&g, 0.99)));
            }
            println!("soak {soak} s at {rate} req/s, RSS KiB / p99 ms every {per} s: {samples:?}");
            // Flat means: over the second half of the soak, RSS grows by less than 1 %.
            let half = &samples[samples.len() / 2..];
            if let (Some(first), Some(last)) = (half.first(), half.last()) {
                let growth = (last.0 as f64 - first.0 as f64) / first.0 as f64 * 100.0;
                let peak = samples.iter().map(|s| s.0).max().unwrap_or(0);
                println!(
                    "soak second half: RSS {} -> {} KiB ({growth:+.2} %), peak {peak} KiB",
                    first.0, last.0
                );
            }
        }
    });
}
