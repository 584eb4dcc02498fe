//! The email providers against mock servers that speak each API: a send, Resend's
//! Idempotency-Key honoured (a retried send delivers once), 429 with Retry-After and 5xx
//! retried, 4xx refused, Postmark's message streams and its 200-with-ErrorCode refusals,
//! SendGrid's 202 with the id in a header.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use quartermaster::integrations::email::{
    Email, EmailProvider, Postmark, Resend, SendError, SendGrid, Stream,
};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Mock {
    /// (path, headers of interest, body) of every call.
    calls: Arc<Mutex<Vec<(String, Value)>>>,
    /// Resend: responses by idempotency key.
    sent: Arc<Mutex<std::collections::HashMap<String, String>>>,
    /// The next answers to give instead of a success (status, retry-after).
    fail: Arc<Mutex<Vec<(u16, Option<&'static str>)>>>,
}

async fn serve(mock: Mock) -> String {
    async fn any(
        State(m): State<Mock>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: axum::Json<Value>,
    ) -> Response {
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        m.calls.lock().unwrap().push((
            uri.path().to_string(),
            json!({"body": body.0, "idempotency": h("idempotency-key"), "auth": h("authorization"),
                   "postmark": h("x-postmark-server-token")}),
        ));
        let next = {
            let mut f = m.fail.lock().unwrap();
            if f.is_empty() {
                None
            } else {
                Some(f.remove(0))
            }
        };
        if let Some((status, retry)) = next {
            let mut r = (
                StatusCode::from_u16(status).unwrap(),
                "{\"message\":\"try later\"}",
            )
                .into_response();
            if let Some(s) = retry {
                r.headers_mut().insert("retry-after", s.parse().unwrap());
            }
            return r;
        }
        match uri.path() {
            "/emails" => {
                let key = h("idempotency-key").unwrap_or_default();
                let mut sent = m.sent.lock().unwrap();
                let n = sent.len();
                let id = sent.entry(key).or_insert_with(|| format!("re_{n}")).clone();
                axum::Json(json!({"id": id})).into_response()
            }
            "/email" => {
                if body.0["To"] == "inactive@example.com" {
                    // Postmark's refusal: 422 with its ErrorCode.
                    return (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        axum::Json(json!({"ErrorCode": 406, "Message": "You tried to send to a recipient that has been marked as inactive."})),
                    )
                        .into_response();
                }
                axum::Json(json!({"ErrorCode": 0, "Message": "OK", "MessageID": "pm-1", "To": body.0["To"]})).into_response()
            }
            _ => {
                let mut r = StatusCode::ACCEPTED.into_response();
                r.headers_mut()
                    .insert("x-message-id", "sg-1".parse().unwrap());
                r
            }
        }
    }
    /// Postmark's outbound message search, by the metadata sent.
    async fn search(
        State(m): State<Mock>,
        headers: HeaderMap,
        axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    ) -> Response {
        if headers.get("x-postmark-server-token").is_none() {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let wanted = q.get("metadata_outbox_id").cloned().unwrap_or_default();
        let found: Vec<Value> = m
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(path, c)| {
                path == "/email" && c["body"]["Metadata"]["outbox_id"] == wanted.as_str()
            })
            .map(|_| json!({"MessageID": "pm-1"}))
            .take(1)
            .collect();
        axum::Json(json!({"TotalCount": found.len(), "Messages": found})).into_response()
    }
    let app = Router::new()
        .route("/emails", post(any))
        .route("/email", post(any))
        .route("/messages/outbound", axum::routing::get(search))
        .route("/v3/mail/send", post(any))
        .with_state(mock);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn email(id: &str, to: &str, stream: Stream) -> Email {
    Email {
        id: id.into(),
        from: "\"QM Billing\" <billing@quartermaster.test>".into(),
        to: to.into(),
        subject: "Your receipt".into(),
        html: "<p>Thanks</p>".into(),
        text: "Thanks".into(),
        stream,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_speak_their_apis() {
    let mock = Mock::default();
    let base = serve(mock.clone()).await;
    quartermaster::install_crypto_provider();
    let http = reqwest::Client::new();
    let resend = Resend {
        base: base.clone(),
        api_key: "re_test".into(),
        http: http.clone(),
    };
    // A send, then the same outbox id again (a retry after a lost answer): one email.
    let first = resend
        .send(&email("ntf_1", "a@example.com", Stream::Transactional))
        .await
        .unwrap();
    let again = resend
        .send(&email("ntf_1", "a@example.com", Stream::Transactional))
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(mock.sent.lock().unwrap().len(), 1);
    let call = mock.calls.lock().unwrap()[0].1.clone();
    assert_eq!(call["idempotency"], "ntf_1");
    assert_eq!(call["auth"], "Bearer re_test");
    assert_eq!(call["body"]["to"], json!(["a@example.com"]));
    // 429 with Retry-After, and 503: retried; 422: refused.
    mock.fail
        .lock()
        .unwrap()
        .extend([(429, Some("3")), (503, None), (422, None)]);
    let e = resend
        .send(&email("ntf_2", "b@example.com", Stream::Transactional))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            SendError::Retry {
                retry_after_secs: Some(3),
                ..
            }
        ),
        "{e:?}"
    );
    let e = resend
        .send(&email("ntf_2", "b@example.com", Stream::Transactional))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            SendError::Retry {
                retry_after_secs: None,
                ..
            }
        ),
        "{e:?}"
    );
    let e = resend
        .send(&email("ntf_2", "b@example.com", Stream::Transactional))
        .await
        .unwrap_err();
    assert!(matches!(e, SendError::Rejected(_)), "{e:?}");

    // Postmark: the stream per kind; a refusal inside a 200.
    let postmark = Postmark {
        base: base.clone(),
        server_token: "pm_token".into(),
        transactional_stream: "outbound".into(),
        broadcast_stream: "digests".into(),
        http: http.clone(),
    };
    assert_eq!(
        postmark
            .send(&email("ntf_3", "c@example.com", Stream::Broadcast))
            .await
            .unwrap(),
        "pm-1"
    );
    let call = mock.calls.lock().unwrap().last().unwrap().1.clone();
    assert_eq!(call["postmark"], "pm_token");
    assert_eq!(call["body"]["MessageStream"], "digests");
    assert_eq!(call["body"]["Metadata"]["outbox_id"], "ntf_3");
    // Before a retry: Postmark is asked whether an earlier attempt went out after all.
    assert_eq!(
        postmark.find_sent("ntf_3").await.unwrap().as_deref(),
        Some("pm-1")
    );
    assert_eq!(postmark.find_sent("ntf_never").await.unwrap(), None);
    let e = postmark
        .send(&email(
            "ntf_4",
            "inactive@example.com",
            Stream::Transactional,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(e, SendError::Rejected(ref m) if m.contains("406")),
        "{e:?}"
    );

    // An outage and a 429 (its Retry-After an HTTP date): retried, for Postmark and SendGrid
    // alike.
    let soon = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(30))
        .strftime("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let soon: &'static str = Box::leak(soon.into_boxed_str());
    mock.fail
        .lock()
        .unwrap()
        .extend([(503, None), (429, Some(soon))]);
    let e = postmark
        .send(&email("ntf_6", "e@example.com", Stream::Transactional))
        .await
        .unwrap_err();
    assert!(matches!(e, SendError::Retry { .. }), "{e:?}");
    let sendgrid_probe = SendGrid {
        base: base.clone(),
        api_key: "SG.test".into(),
        http: http.clone(),
    };
    let e = sendgrid_probe
        .send(&email("ntf_7", "f@example.com", Stream::Transactional))
        .await
        .unwrap_err();
    assert!(
        matches!(e, SendError::Retry { retry_after_secs: Some(s), .. } if (25..=31).contains(&s)),
        "{e:?}"
    );

    // SendGrid: 202, the id in a header.
    let sendgrid = SendGrid {
        base,
        api_key: "SG.test".into(),
        http,
    };
    assert_eq!(
        sendgrid
            .send(&email("ntf_5", "d@example.com", Stream::Transactional))
            .await
            .unwrap(),
        "sg-1"
    );
    let call = mock.calls.lock().unwrap().last().unwrap().1.clone();
    assert_eq!(
        call["body"]["personalizations"][0]["custom_args"]["outbox_id"],
        "ntf_5"
    );
    assert_eq!(call["body"]["content"][1]["type"], "text/html");
    // The sender's display name apart from the address (SendGrid refuses "Name <a@b>").
    assert_eq!(
        call["body"]["from"],
        json!({"email": "billing@quartermaster.test", "name": "QM Billing"})
    );
}

/// Through the outbox job: Postmark accepted the first send but its answer was lost (a 503
/// here, after the mock recorded the email); the retry asks Postmark first, finds the
/// message, and does not send it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postmark_send_whose_answer_was_lost_is_not_sent_again() {
    use crate::common::{Options, TestApp, wait_for};
    use quartermaster::notify::{self, Notice};
    let mock = Mock::default();
    let base = serve(mock.clone()).await;
    let app = TestApp::spawn_with(Options::extra(&format!(
        "[rate_limit]\nenabled = false\n[jobs]\npoll_interval_ms = 50\nbackoff_base_ms = 50\nbackoff_max_ms = 100\n\
         [email]\nprovider = \"postmark\"\nbase_url = \"{base}\"\napi_key = \"pm_token\"\n"
    )))
    .await;
    let store = app.store().await;
    mock.fail.lock().unwrap().push((503, None));
    let tenant = store.ensure_tenant("tenant-a").await.unwrap();
    let notice = Notice::render(
        "notice",
        &tenant.id,
        "lost-answer",
        json!({"subject": "Hello", "body": "b"}),
    )
    .unwrap()
    .email(Some("lost@example.com"));
    let queue = quartermaster::jobs::JobQueue::new(store.clone(), Default::default());
    notify::send(&store, &queue, &[notice]).await.unwrap();
    let state = || async {
        quartermaster::store::on_pool!(&store, p => sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT state, provider_id FROM email_outbox").fetch_one(p).await)
        .unwrap()
    };
    wait_for(15, "the email settles", || async {
        state().await.0 == "sent"
    })
    .await;
    assert_eq!(
        state().await.1.as_deref(),
        Some("pm-1"),
        "found, not sent again"
    );
    let posts = mock
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(path, _)| path == "/email")
        .count();
    assert_eq!(posts, 1, "one POST: the retry asked instead of sending");
}
