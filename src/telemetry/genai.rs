//! Attribute names of OpenTelemetry's GenAI semantic conventions, and the gateway's own
//! (`quartermaster.*`), in one place: spans are filled from these, never from literals.

pub const OPERATION: &str = "gen_ai.operation.name";
/// The upstream's wire protocol: `openai`, `anthropic`, or `quartermaster.local`.
pub const PROVIDER: &str = "gen_ai.provider.name";
pub const REQUEST_MODEL: &str = "gen_ai.request.model";
pub const REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
pub const REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
pub const INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
pub const OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
pub const FINISH_REASONS: &str = "gen_ai.response.finish_reasons";

pub const HTTP_METHOD: &str = "http.request.method";
pub const HTTP_ROUTE: &str = "http.route";
pub const HTTP_STATUS: &str = "http.response.status_code";
pub const URL_PATH: &str = "url.path";

/// The provider as configured (`[providers.NAME]`).
pub const QM_PROVIDER: &str = "quartermaster.provider";
pub const TENANT: &str = "quartermaster.tenant";
pub const REQUEST_ID: &str = "quartermaster.request_id";
pub const ROUTE_TIER: &str = "quartermaster.route.tier";
pub const ROUTE_REASON: &str = "quartermaster.route.reason";
/// `hit`, `miss` or `bypass`.
pub const CACHE_RESULT: &str = "quartermaster.cache.result";
/// `exact` or `semantic`, on a hit.
pub const CACHE_KIND: &str = "quartermaster.cache.kind";
pub const CACHE_SIMILARITY: &str = "quartermaster.cache.similarity";
pub const CACHE_ENTRY: &str = "quartermaster.cache.entry";
pub const RAG_CHUNKS: &str = "quartermaster.rag.chunks";
/// Which try this is on its model (0 first).
pub const ATTEMPT: &str = "quartermaster.attempt";
/// `ok`, `cache_hit`, `error`, `client_disconnected`.
pub const OUTCOME: &str = "quartermaster.outcome";
