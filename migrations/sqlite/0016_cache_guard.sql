-- The cache's guard (src/cache/guard.rs) holds a tenant to a stricter bound when the
-- application's wrong verdicts on semantic hits are too many for it: a verdict is matched to
-- its request's log row, and the tenant's semantic hits over the window are counted.
CREATE INDEX request_log_tenant_request ON request_log(tenant_id, request_id);
CREATE INDEX request_log_semantic_hits ON request_log(tenant_id, created_at)
    WHERE route_reason = 'cache_semantic';
