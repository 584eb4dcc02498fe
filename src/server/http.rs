//! The HTTP server loop: accepts connections and serves the router on each with hyper,
//! with the timeouts a server facing the internet needs and the API's error shape even for
//! requests hyper itself refuses.
//!
//! - A request's header must arrive within `server.header_read_timeout_secs` of the
//!   connection being ready for it: a connection that says nothing (or trickles its
//!   header, or sits idle between keep-alive requests) is closed after it.
//! - (A request's body must arrive within `server.body_read_timeout_secs`: `api::body`.)
//! - A request hyper cannot parse (a control character in a header, a header section over
//!   the limit) gets hyper's own bare 4xx; [`EnvelopeErrors`] writes the API's JSON error
//!   envelope in its place.
//! - Shutdown stops accepting and lets open connections finish (the caller bounds that).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Serves `router` on `listener` until `shutdown` resolves, then waits for open
/// connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    // Connections that have not sent their first bytes yet are not watched by `graceful`:
    // this tells them to give up when shutdown begins.
    let stopping = tokio_util::sync::CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(v) => v,
                Err(e) => {
                    // Out of descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Streams are many small writes: without TCP_NODELAY, Nagle's algorithm holds each
        // one back until the client's delayed ACK (~40 ms per chunk).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let (router, builder, watcher) = (router.clone(), builder.clone(), graceful.watcher());
        let stopping = stopping.clone();
        tokio::spawn(async move {
            // Hyper's HTTP/1 header timeout starts once it knows the protocol, which it learns
            // from the first bytes: a connection that sends none is closed here.
            let mut first = [0u8; 1];
            tokio::select! {
                peeked = tokio::time::timeout(header_read_timeout, tcp.peek(&mut first)) => {
                    match peeked {
                        Ok(Ok(n)) if n > 0 => {}
                        Ok(_) => return, // closed (or failed) before sending anything
                        Err(_) => {
                            tracing::debug!(%peer, "connection sent nothing; closed");
                            return;
                        }
                    }
                }
                _ = stopping.cancelled() => return,
            }
            // The peer's address is read by the failed-authentication limiter.
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(req)
            });
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(EnvelopeErrors::new(tcp)), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    stopping.cancel();
    graceful.shutdown().await;
    Ok(())
}

/// The API's error envelope in place of the bare error responses hyper writes for requests
/// it cannot parse. Hyper's own are the only responses with an error status, a
/// `content-length: 0` and no content type (the API's always carry a JSON body); the
/// connection closes after them, so rewriting one cannot confuse what follows.
struct EnvelopeErrors<S> {
    inner: S,
    /// A rewritten response still being written, and how much of it is out.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> EnvelopeErrors<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

/// The envelope response for one of hyper's bare error heads, or `None` for anything else.
fn envelope_for(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let status_line = text.strip_prefix("HTTP/1.1 ")?.split("\r\n").next()?;
    let status: u16 = status_line.get(..3)?.parse().ok()?;
    let lower = text.to_ascii_lowercase();
    if !(400..600).contains(&status)
        || !lower.contains("\r\ncontent-length: 0\r\n")
        || lower.contains("\r\ncontent-type:")
        || !text.ends_with("\r\n\r\n")
    {
        return None;
    }
    let (code, message) = match status {
        431 => (
            "request_header_too_large",
            "the request's header section is too large",
        ),
        414 => ("uri_too_long", "the request's URI is too long"),
        505 => ("http_version_not_supported", "unsupported HTTP version"),
        408 => (
            "request_timeout",
            "the request's header did not arrive in time",
        ),
        _ => (
            "invalid_http",
            "malformed HTTP request: a header name or value has characters HTTP does not allow, or the request line is invalid",
        ),
    };
    let body = serde_json::json!({"error": {
        "message": message, "type": "invalid_request_error", "param": null, "code": code,
    }})
    .to_string();
    metrics::counter!("qm_errors_total", "code" => code).increment(1);
    Some(
        format!(
            "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncWrite + Unpin> EnvelopeErrors<S> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((buf, done)) = self.pending.as_mut() {
            if *done == buf.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for EnvelopeErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for EnvelopeErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        // Only a whole response head written by itself can be one of hyper's bare errors.
        if buf.len() < 512 && buf.starts_with(b"HTTP/1.1 ") {
            if let Some(replacement) = envelope_for(buf) {
                self.pending = Some((replacement, 0));
                // Reported as written; the replacement goes out before anything else.
                let _ = self.poll_pending(cx)?;
                return Poll::Ready(Ok(buf.len()));
            }
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bare_error_heads_are_rewritten() {
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(envelope_for(bare).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"));
        let body = out.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "invalid_http");
        assert!(out.contains(&format!("content-length: {}\r\n", body.len())));
        let big = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(
            String::from_utf8(envelope_for(big).unwrap())
                .unwrap()
                .contains("request_header_too_large")
        );
        // The API's own responses are left alone.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 80\r\n\r\n";
        assert!(envelope_for(ours).is_none());
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(envelope_for(ok).is_none());
        let no_content = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\nextra";
        assert!(envelope_for(no_content).is_none());
    }
}
