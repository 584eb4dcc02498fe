//! The OpenAPI 3.1 document of every route, served at `/openapi.json`. Request bodies and
//! queries are described from the extractors' own types (their `JsonSchema` derive, which
//! follows their serde attributes: a body that denies unknown fields says so); the wire
//! formats of other vendors (OpenAI's, Anthropic's, the AI SDK's) and answers built as JSON
//! are described in `operations.rs`. Every error is the door's error shape (`default`). A
//! test checks that every route the router serves is in the document.

mod operations;
mod schemas;

use std::sync::OnceLock;

use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// A tenant's API key (or an end user's token or session).
    Tenant,
    /// The admin key, an operator key or a console session.
    Admin,
    /// No credential (health, metrics, the document itself).
    Public,
    /// A webhook sender's signature over the raw body.
    Signed,
}

/// One operation, built by `operations.rs`.
pub struct Op {
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    auth: Auth,
    parameters: Vec<Value>,
    body: Option<(bool, Value)>,
    responses: Map<String, Value>,
}

/// Builds one operation: `op("get", "/v1/models", "Models", "List the models")`.
pub fn op(
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
) -> Op {
    let parameters = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({"name": name, "in": "path", "required": true,
                   "schema": {"type": "string", "minLength": 1}})
        })
        .collect();
    Op {
        method,
        path,
        tag,
        summary,
        auth: Auth::Tenant,
        parameters,
        body: None,
        responses: Map::new(),
    }
}

impl Op {
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Query parameters from the query extractor's type (its properties, each optional
    /// unless the type requires it).
    pub fn query<T: JsonSchema>(mut self, g: &mut SchemaGenerator) -> Self {
        let schema = g.root_schema_for::<T>().to_value();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(props) = schema["properties"].as_object() {
            for (name, s) in props {
                self.parameters.push(json!({"name": name, "in": "query",
                    "required": required.contains(&name.as_str()), "schema": s}));
            }
        }
        self
    }

    /// A JSON body of the body extractor's type.
    pub fn body<T: JsonSchema>(mut self, g: &mut SchemaGenerator) -> Self {
        self.body = Some((
            true,
            json!({"application/json": {"schema": g.subschema_for::<T>()}}),
        ));
        self
    }

    /// A body described by hand (`content` is the OpenAPI content map); `required` or not.
    pub fn body_content(mut self, required: bool, content: Value) -> Self {
        self.body = Some((required, content));
        self
    }

    /// A JSON body described by hand.
    pub fn body_schema(self, schema: Value) -> Self {
        self.body_content(true, json!({"application/json": {"schema": schema}}))
    }

    /// A JSON answer of the handler's own type.
    pub fn ok_type<T: JsonSchema>(self, status: u16, g: &mut SchemaGenerator) -> Self {
        let schema = g.subschema_for::<T>().to_value();
        self.ok(status, schema)
    }

    /// A JSON answer described by hand.
    pub fn ok(self, status: u16, schema: Value) -> Self {
        self.answer(status, json!({"application/json": {"schema": schema}}))
    }

    /// An answer with its content map (SSE, text, JSON lines...).
    pub fn answer(mut self, status: u16, content: Value) -> Self {
        self.responses.insert(
            status.to_string(),
            json!({"description": description(status), "content": content}),
        );
        self
    }

    /// An answer with no body.
    pub fn empty(mut self, status: u16) -> Self {
        self.responses.insert(
            status.to_string(),
            json!({"description": description(status)}),
        );
        self
    }

    fn into_value(self) -> Value {
        let mut responses = self.responses;
        // Every error, whatever its status, is the door's error shape.
        let error = if self.path.starts_with("/v1/messages") {
            "#/components/schemas/AnthropicError"
        } else {
            "#/components/schemas/Error"
        };
        responses.insert(
            "default".into(),
            json!({"description": "An error, in the door's own shape",
                   "content": {"application/json": {"schema": {"$ref": error}}}}),
        );
        let mut op = json!({
            "operationId": operation_id(self.method, self.path),
            "tags": [self.tag],
            "summary": self.summary,
            "parameters": self.parameters,
            "responses": responses,
        });
        op["security"] = match self.auth {
            Auth::Tenant => json!([{"apiKey": []}]),
            Auth::Admin => json!([{"adminKey": []}]),
            Auth::Public | Auth::Signed => json!([]),
        };
        if let Some((required, content)) = self.body {
            op["requestBody"] = json!({"required": required, "content": content});
        }
        op
    }
}

fn description(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No content",
        _ => "Answer",
    }
}

/// `get /v1/models/{id}` -> `get_v1_models_id`.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_string();
    for c in path.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '_' };
        if c != '_' || !id.ends_with('_') {
            id.push(c);
        }
    }
    id.trim_end_matches('_').to_string()
}

/// The document (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> Value {
    let mut g = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let mut paths = Map::new();
    for op in operations::all(&mut g) {
        let (path, method) = (op.path, op.method);
        let item = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        item[method] = op.into_value();
    }
    let mut components: Map<String, Value> = g.take_definitions(true).into_iter().collect();
    components.extend(schemas::shared());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Quartermaster",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "An LLM gateway: OpenAI's and Anthropic's APIs and the AI SDK's UI message stream in front of routed upstreams, with a semantic cache, retrieval, budgets and an operator API.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer",
                           "description": "A tenant's API key (`qm_...`), or an end user's token; Anthropic's SDKs may send it as `x-api-key`."},
                "adminKey": {"type": "http", "scheme": "bearer",
                             "description": "The admin key, an operator key, an operator's identity token or a console session (`qms_...`)."},
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `.route("PATH", method(...))` in src/api, as (method, OpenAPI path).
    fn routed() -> Vec<(String, String)> {
        let mut out = vec![];
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, _) in text.match_indices(".route(") {
                    let rest = &text[i + 7..];
                    let Some(start) = rest.find('"') else {
                        continue;
                    };
                    let Some(len) = rest[start + 1..].find('"') else {
                        continue;
                    };
                    let route = &rest[start + 1..start + 1 + len];
                    // The call's own text, to its closing parenthesis.
                    let (mut depth, mut end) = (1, 0);
                    for (j, c) in rest.char_indices() {
                        depth += match c {
                            '(' => 1,
                            ')' => -1,
                            _ => 0,
                        };
                        if depth == 0 {
                            end = j;
                            break;
                        }
                    }
                    let call = &rest[..end];
                    for m in ["get", "post", "put", "delete", "patch"] {
                        let found = call.match_indices(&format!("{m}(")).any(|(k, _)| {
                            k == 0 || !call.as_bytes()[k - 1].is_ascii_alphanumeric()
                        });
                        if found && route.starts_with('/') && !route.starts_with("/console") {
                            out.push((m.to_string(), route.to_string()));
                        }
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let doc = document();
        let mut documented = vec![];
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        documented.sort();
        assert_eq!(documented, routed());
    }

    #[test]
    fn the_document_is_openapi_3_1_with_unique_operation_ids() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut ids = vec![];
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                ids.push(op["operationId"].as_str().unwrap().to_string());
                assert!(op["responses"]["default"].is_object());
            }
        }
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "operation ids are unique");
        // Every $ref points at a component that exists.
        let text = doc.to_string();
        let marker = "\"$ref\":\"#/components/schemas/";
        for (i, _) in text.match_indices(marker) {
            let rest = &text[i + marker.len()..];
            let name = &rest[..rest.find('"').unwrap()];
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "missing component {name}"
            );
        }
    }
}
