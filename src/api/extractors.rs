//! Extractors that reject in the API's own error shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::api::error::ApiError;

/// Like `axum::Json`, but every rejection (size, encoding, syntax, types) is an [`ApiError`]
/// that names the offending field.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        // Clients that send no content type are tolerated; a wrong one is not.
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            if !is_json_media_type(ct.to_str().unwrap_or_default()) {
                return Err(ApiError::UnsupportedMediaType);
            }
        }
        let bytes = read_bytes(req).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// `application/json` or `application/<anything>+json`, parameters (`; charset=utf-8`)
/// allowed; not `application/jsonx` or `text/json+x`.
pub fn is_json_media_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.split_once('/') {
        Some(("application", sub)) => sub == "json" || (sub.ends_with("+json") && sub.len() > 5),
        _ => false,
    }
}

/// The raw body (for signatures computed over exact bytes), with the same limit and
/// rejections as [`ApiJson`].
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read_bytes(req).await.map(RawBody)
    }
}

/// Reads the whole body within the configured limit; an oversized body is the API's 413.
pub async fn read_bytes(req: Request) -> Result<Bytes, ApiError> {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .map(|l| l.0)
        .unwrap_or(usize::MAX);
    Bytes::from_request(req, &()).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge { limit }
        } else if super::body::is_body_timeout(&rejection) {
            ApiError::RequestTimeout
        } else {
            ApiError::invalid(
                format!("could not read request body: {}", rejection.body_text()),
                None,
            )
        }
    })
}

/// The configured body limit, attached to requests so rejections can state it.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// Parses a JSON body, naming the path of a field with the wrong type.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ApiError::InvalidUtf8)?;
    if text.trim().is_empty() {
        return Err(ApiError::InvalidJson("the body is empty".into()));
    }
    // The common case parses once, without tracking paths; a body that fails is parsed again
    // with path tracking to name the offending field.
    if let Ok(value) = serde_json::from_str(text) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::InvalidJson(inner.to_string())
        } else {
            let param = (path != ".").then_some(path);
            ApiError::invalid(format!("invalid request: {inner}"), param)
        }
    })?;
    de.end().map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    Ok(value)
}

/// Like `axum::extract::Query`, but a bad query string is the API's 400 naming the field.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                let param = (path != ".").then_some(path);
                ApiError::invalid(format!("invalid query string: {}", e.into_inner()), param)
            })
    }
}

/// Like `axum::extract::Path`, but a bad path segment (not UTF-8 once decoded, or of the
/// wrong type) is the API's 400 or 404.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(rejection) => Err(ApiError::invalid(
                format!("invalid path: {}", rejection.body_text()),
                Some("path".to_string()),
            )),
        }
    }
}
