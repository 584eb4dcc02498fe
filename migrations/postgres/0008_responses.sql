-- Stored Responses API responses (`store: true`, the default): the response object as it was
-- returned, the request's input items (GET /v1/responses/{id}/input_items), and the whole
-- conversation as chat messages, which `previous_response_id` continues. Tenant-scoped.
CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    response TEXT NOT NULL,
    input_items TEXT NOT NULL,
    history TEXT NOT NULL
);
CREATE INDEX responses_by_tenant ON responses (tenant_id, created_at);

-- Every input and output item of the stored responses, by id: what a later request's
-- `item_reference` (the AI SDK sends one for each earlier output when store is on) resolves to.
CREATE TABLE response_items (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    response_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    item TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX response_items_by_response ON response_items (response_id);
