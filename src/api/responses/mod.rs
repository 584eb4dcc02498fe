//! OpenAI's Responses API on the chat pipeline: `POST /v1/responses` (streamed or not),
//! `GET` and `DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`. The door
//! decodes a Responses request into the canonical chat request (`decode.rs`: so the cache
//! keys it as the equivalent chat request, and chat-only upstreams can answer it), runs the
//! pipeline, and encodes the answer as a `response` or its event stream (`encode.rs`).
//! Responses are stored per tenant unless `store: false`; `previous_response_id` continues a
//! stored conversation (another tenant's id is a 404, as an unknown one).

mod decode;
mod encode;

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extractors::{ApiJson, ApiPath, ApiQuery};
use super::state::AppState;
use crate::auth::Principal;
use crate::chat::ChatBody;
use crate::store::{Store, StoredResponse};
pub use decode::ResponsesRequest;
use encode::{Saver, Shell, StreamEncoder};

/// An id in OpenAI's style: `resp_...`, `msg_...`, `fc_...`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("Response with id '{id}' not found."))
}

/// `POST /v1/responses`.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    crate::api::trace::RequestSpan(trace): crate::api::trace::RequestSpan,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ResponsesRequest>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant.id.clone();
    // The end user the response is stored for (found and deleted with the user).
    let user = principal.user.clone().or_else(|| req.user.clone());
    let items = resolve_references(&state.store, &tenant, req.input_items()?).await?;
    let history = match &req.previous_response_id {
        None => Vec::new(),
        Some(id) => {
            state
                .store
                .load_response(&tenant, id)
                .await?
                .ok_or_else(|| {
                    ApiError::invalid(
                        format!("Previous response with id '{id}' not found."),
                        Some("previous_response_id".to_string()),
                    )
                })?
                .history
        }
    };
    let request = super::controls::chat_request(
        &headers,
        principal,
        trace,
        req.to_chat(history.clone(), &items)?,
    )?;
    let answer = state.chat.run(request).await?;
    let meta = answer.meta;
    let shell = Shell::new(&req, meta.citations.clone());
    let conversation = Conversation {
        saver: state.response_saver.clone(),
        user: user.clone(),
        tenant,
        id: shell.id.clone(),
        items,
        history,
    };
    let mut response = match answer.body {
        ChatBody::Whole(completion) => {
            let (object, output) = shell.from_completion(&completion);
            if req.stores() {
                conversation.save(object.clone(), output).await?;
            }
            Json(object).into_response()
        }
        ChatBody::Stream(events) => {
            let saver: Option<Saver> = req.stores().then(|| {
                Box::new(move |object, output| {
                    Box::pin(conversation.save(object, output))
                        as futures::future::BoxFuture<'static, _>
                }) as Saver
            });
            super::sse::response(StreamEncoder::new(shell).encode(events, saver))
        }
    };
    super::controls::write(&meta, response.headers_mut());
    Ok(response)
}

/// Replaces each `item_reference` with the stored item it names (the tenant's own: the AI
/// SDK refers to earlier outputs this way when responses are stored).
async fn resolve_references(
    store: &Store,
    tenant: &str,
    items: Vec<Value>,
) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        if item.get("type").and_then(Value::as_str) != Some("item_reference") {
            out.push(item);
            continue;
        }
        let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
        match store.load_response_item(tenant, id).await? {
            Some(found) => out.push(found),
            None => {
                return Err(ApiError::invalid(
                    format!("Item with id '{id}' not found."),
                    Some(format!("input[{i}].id")),
                ));
            }
        }
    }
    Ok(out)
}

/// What is stored of a finished response.
struct Conversation {
    saver: crate::store::ResponseSaver,
    user: Option<String>,
    tenant: String,
    id: String,
    items: Vec<Value>,
    /// The conversation before this request, as chat messages.
    history: Vec<Value>,
}

impl Conversation {
    /// Stores the response with the conversation it ends (for `previous_response_id`).
    async fn save(self, object: Value, output: Vec<Value>) -> Result<(), ApiError> {
        let mut history = self.history;
        history.extend(decode::items_to_messages(&self.items)?);
        history.extend(decode::items_to_messages(&output)?);
        let stored = StoredResponse {
            response: object,
            input_items: self.items,
            history,
            user: self.user,
        };
        self.saver
            .save(&self.id, &self.tenant, &stored, &output)
            .await?;
        Ok(())
    }
}

/// `GET /v1/responses/{id}`.
pub async fn retrieve(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    match state.store.load_response(&principal.tenant.id, &id).await? {
        Some(r) => Ok(Json(r.response)),
        None => Err(not_found(&id)),
    }
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    if state
        .store
        .delete_response(&principal.tenant.id, &id)
        .await?
    {
        Ok(Json(
            json!({"id": id, "object": "response", "deleted": true}),
        ))
    } else {
        Err(not_found(&id))
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ItemsQuery {
    /// 1 to 100 (default 20).
    #[serde(default)]
    #[schemars(extend("minimum" = 1, "maximum" = 100))]
    limit: Option<usize>,
    /// `asc` or `desc` (OpenAI's default).
    #[serde(default)]
    #[schemars(extend("enum" = ["asc", "desc"]))]
    order: Option<String>,
    /// An item id: the page starts after it.
    #[serde(default)]
    after: Option<String>,
}

/// `GET /v1/responses/{id}/input_items`: the request's input items, a page at a time.
pub async fn input_items(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ItemsQuery>,
) -> Result<Json<Value>, ApiError> {
    let Some(stored) = state.store.load_response(&principal.tenant.id, &id).await? else {
        return Err(not_found(&id));
    };
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid(
            "`limit` must be between 1 and 100",
            Some("limit".to_string()),
        ));
    }
    let mut items = stored.input_items;
    match q.order.as_deref() {
        None | Some("desc") => items.reverse(),
        Some("asc") => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "`order` must be asc or desc",
                Some("order".to_string()),
            ));
        }
    }
    if let Some(after) = &q.after {
        match items.iter().position(|i| i["id"] == after.as_str()) {
            Some(at) => {
                items.drain(..=at);
            }
            None => {
                return Err(ApiError::invalid(
                    format!("no input item `{after}` in this response"),
                    Some("after".to_string()),
                ));
            }
        }
    }
    let has_more = items.len() > limit;
    items.truncate(limit);
    Ok(Json(json!({
        "object": "list",
        "data": items,
        "first_id": items.first().map(|i| i["id"].clone()),
        "last_id": items.last().map(|i| i["id"].clone()),
        "has_more": has_more,
    })))
}
