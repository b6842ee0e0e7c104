-- The response cache: a small first level in this gateway's memory (shared dict gw_l1, a
-- second or two), then Redis, the level every gateway replica shares.
--
-- What may be stored and for how long is gateway_policy's. The key is the route, scheme, host,
-- method and the raw request URI ($request_uri: never percent-decoded, so two spellings of a
-- path are two keys). X-Cache says HIT (served from either level), MISS (looked up, answered
-- by the backend) or BYPASS (the request or the answer may not be shared).
--
-- A MISS is proxied and streamed to the client like any other request; the header and body
-- filters copy the answer aside while it passes, and only a complete answer (eof seen, length
-- as announced, a real HTTP answer with framing) no larger than cache_max_body_bytes is
-- stored. A larger one is abandoned as soon as it passes the cap, so a fill never holds more
-- than the cap, whatever the answer's size.
-- One fill per key at a time: the first MISS takes a lock (shared dict gw_locks); the others
-- wait up to cache_lock_wait_ms for its answer, then go to the backend without storing.
-- Storage (the two levels, the format, Redis) is gateway_store's; when Redis cannot be asked
-- the request is a MISS that stores nothing.

local policy = require "gateway_policy"
local store = require "gateway_store"

local ngx = ngx
local locks = ngx.shared.gw_locks

local M = {}
M.require_any = store.require_any
local conf = {}
local POLL_S = 0.01 -- how often a waiting MISS looks whether the fill is done

-- Headers not stored: hop-by-hop, per-answer (Date, Age, ids), and the ones the gateway adds
-- itself to every answer.
local NOT_STORED = {
    ["connection"] = true, ["keep-alive"] = true, ["transfer-encoding"] = true, ["content-length"] = true,
    ["te"] = true, ["trailer"] = true, ["upgrade"] = true, ["proxy-connection"] = true, ["date"] = true,
    ["age"] = true, ["server"] = true, ["x-cache"] = true, ["x-request-id"] = true, ["set-cookie"] = true,
    ["x-frame-options"] = true, ["x-content-type-options"] = true, ["referrer-policy"] = true,
    ["x-xss-protection"] = true, ["content-security-policy"] = true, ["strict-transport-security"] = true,
}

function M.init(config)
    conf = config
    store.init(config)
end

-- Answer a HIT from a stored entry and end the request.
local function serve(ctx, entry, now)
    ctx.cache = "HIT"
    local headers, names = entry.headers, entry.names
    for i = 1, #names do
        ngx.header[names[i]] = headers[names[i]]
    end
    ngx.header["Age"] = math.max(0, math.floor(now - entry.stored))
    if entry.status == 200 and (entry.etag or entry.modified) and policy.not_modified(ngx.var.http_if_none_match,
        ngx.var.http_if_modified_since, entry.etag, entry.modified) then
        ngx.header["Content-Type"] = nil
        ngx.status = ngx.HTTP_NOT_MODIFIED
        ngx.send_headers()
        return ngx.exit(ngx.HTTP_OK)
    end
    ngx.status = entry.status
    ngx.header["Content-Length"] = #entry.body
    ngx.print(entry.body)
    return ngx.exit(ngx.HTTP_OK)
end

-- Both levels: a HIT is answered and never returns; false after a MISS, nil when Redis could
-- not be asked.
local function find(ctx, now)
    local entry = store.get(ctx.cache_key, now)
    if entry then
        return serve(ctx, entry, now)
    end
    return entry
end

local function release(ctx)
    if ctx.lock_key then
        if locks:get(ctx.lock_key) == ctx.lock_token then
            locks:delete(ctx.lock_key)
        end
        ctx.lock_key = nil
    end
end
M.release = release

-- Access phase: answer a HIT and end the request, else decide whether this MISS fills.
function M.lookup(route, ctx)
    local var = ngx.var
    if route.cache_ttl_s <= 0 or policy.request_bypass(ngx.req.get_method(), var.http_authorization,
        var.http_cookie, var.http_range, var.http_cache_control) then
        ctx.cache = "BYPASS"
        return
    end
    ctx.cache = "MISS"
    ctx.cache_key = "gw2:" .. route.name .. ":" .. var.scheme .. "://" .. (var.host or "") .. " GET "
        .. var.request_uri
    local now = ngx.now()
    local found = find(ctx, now)
    if found == nil then
        return -- Redis is not there: fetch, store nothing
    end
    local lock_key = "fill:" .. ctx.cache_key
    local token = var.request_id
    local wait = conf.cache_lock_wait_ms / 1000
    if not locks:add(lock_key, token, wait + route.read_timeout_s + 1) then
        -- Another request fills this key: wait for it, then use what it stored.
        local deadline = ngx.now() + wait
        while locks:get(lock_key) and ngx.now() < deadline do
            ngx.sleep(POLL_S)
            ngx.update_time()
        end
        find(ctx, ngx.now())
        return -- still a MISS (no answer stored, or the lock timed out): fetch, store nothing
    end
    ctx.lock_key, ctx.lock_token = lock_key, token
    ctx.fill = route.cache_ttl_s
end

-- Header filter of every routed request: tell the client what the cache did, and start
-- copying a fill's answer aside when it may be stored.
function M.header_filter(ctx)
    local ttl = ctx.fill
    if ttl then
        ctx.fill = nil
        local var = ngx.var
        local status = ngx.status
        -- A real HTTP answer of the backend: nginx takes bytes without a status line for
        -- HTTP/0.9 (the request's version then reads 0.9) and such an answer has no framing.
        local length = tonumber(var.upstream_http_content_length)
        local chunked = (var.upstream_http_transfer_encoding or ""):lower():find("chunked", 1, true)
        local genuine = ngx.req.http_version() ~= 0.9 and tostring(status) == (var.upstream_status or ""):match("(%d+)$")
            and (length or chunked)
        local headers, lower = ngx.resp.get_headers(100, true), {}
        for name, value in pairs(headers) do
            lower[name:lower()] = value
        end
        local now = ngx.now()
        local life, why = policy.lifetime(status, lower, ttl, now)
        if not life and why ~= "status" then
            ctx.cache = "BYPASS"
        elseif life and genuine and (length or 0) <= conf.cache_max_body_bytes then
            local lines = {}
            for name, value in pairs(headers) do
                if not NOT_STORED[name:lower()] then
                    if type(value) ~= "table" then
                        value = { value }
                    end
                    for _, item in ipairs(value) do
                        lines[#lines + 1] = name .. ": " .. item .. "\n"
                    end
                end
            end
            ctx.fill_head = store.head(status, now, now + life, lines)
            ctx.fill_expires = now + life
            ctx.fill_length = length
            ctx.fill_size = 0
            ctx.fill_body = {}
        end
        if not ctx.fill_body then
            release(ctx)
        end
    end
    local status = ctx.cache
    if status then
        ngx.header["X-Cache"] = status -- the access log reads it back ($sent_http_x_cache)
    end
end

-- Body filter of cached routes: copy a fill's chunks until eof, give up past the size cap.
function M.body_filter(ctx)
    local body = ctx.fill_body
    if not body then
        return
    end
    local chunk, eof = ngx.arg[1], ngx.arg[2]
    if chunk ~= "" then
        local size = ctx.fill_size + #chunk
        if size > conf.cache_max_body_bytes then
            ctx.fill_body = nil -- too big to store: the rest streams through untouched
            release(ctx)
            return
        end
        ctx.fill_size = size
        body[#body + 1] = chunk
    end
    if not eof then
        return
    end
    ctx.fill_body = nil
    if ctx.fill_length == nil or ctx.fill_length == ctx.fill_size then
        store.put(ctx.cache_key, ctx.fill_head .. table.concat(body), ctx.fill_expires, ngx.now())
    end
    release(ctx)
end

return M
