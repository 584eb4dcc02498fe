//! HTTP metrics per route: requests by method and status, and their duration.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

pub(super) async fn record_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = method_label(req.method());
    let response = next.run(req).await;
    let route = RouteMetrics::of(route.as_ref().map_or("unmatched", |p| p.as_str()));
    route
        .requests(method, response.status().as_u16())
        .increment(1);
    route.duration.record(start.elapsed().as_secs_f64());
    response
}

/// A method as a metric label; any other than the standard ones is `other` (a client may
/// send any token as a method: it must not make a new time series).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// A route's HTTP metrics, registered once (routes are the router's, so the set is
/// bounded): a label set written out per request costs a registry lookup and a copy of
/// each label string.
struct RouteMetrics {
    route: String,
    /// `qm_http_request_duration_seconds`.
    duration: metrics::Histogram,
    /// `qm_http_requests_total` by method and status.
    requests: std::sync::RwLock<std::collections::HashMap<(&'static str, u16), metrics::Counter>>,
}

impl RouteMetrics {
    fn of(route: &str) -> Arc<RouteMetrics> {
        static ROUTES: crate::telemetry::Kept<RouteMetrics> =
            crate::telemetry::Kept::new(usize::MAX);
        ROUTES.get(route, || RouteMetrics {
            route: route.to_string(),
            duration: metrics::histogram!("qm_http_request_duration_seconds", "route" => route.to_string()),
            requests: Default::default(),
        })
    }

    fn requests(&self, method: &'static str, status: u16) -> metrics::Counter {
        if let Some(c) = self
            .requests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(method, status))
        {
            return c.clone();
        }
        self.requests
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry((method, status))
            .or_insert_with(|| {
                metrics::counter!("qm_http_requests_total", "method" => method, "route" => self.route.clone(), "status" => status.to_string())
            })
            .clone()
    }
}
