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
--
-- Redis trouble never fails a request: the lookup counts as a MISS, and after a connection
-- error Redis is left alone for a few seconds so requests do not each wait for it.
-- The password comes from the environment (GATEWAY_REDIS_PASSWORD, a container secret),
-- never from nginx.conf.

-- The first of several module names that loads: OpenResty ships resty.*, Debian packages
-- the same libraries as nginx.*.
local function require_any(...)
    local failures = {}
    for _, name in ipairs({ ... }) do
        local ok, mod = pcall(require, name)
        if ok then
            return mod
        end
        failures[#failures + 1] = mod
    end
    error(table.concat(failures, "\n"))
end

local redis = require_any("resty.redis", "nginx.redis")
local policy = require "gateway_policy"

local ngx = ngx
local state = ngx.shared.gw_state
local l1 = ngx.shared.gw_l1
local locks = ngx.shared.gw_locks

local M = {}
M.require_any = require_any
local conf = {}
local password
-- FORMAT status \n stored_at \n expires_at \n (name: value \n)* \n body; times in seconds
-- with milliseconds, so a lifetime of 1 s is a second, not what is left of the current one.
local FORMAT = "gw2\n"
local DOWN_FOR = 2 -- seconds Redis is skipped after a failure
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
    password = os.getenv("GATEWAY_REDIS_PASSWORD")
    if password == "" then
        password = nil
    end
end

local function connect()
    if state:get("redis_down") then
        return nil, "marked down"
    end
    local red = redis:new()
    red:set_timeout(conf.redis_timeout_ms)
    local ok, err = red:connect(conf.redis_host, conf.redis_port)
    if not ok then
        state:set("redis_down", true, DOWN_FOR)
        ngx.log(ngx.WARN, "gateway cache: Redis unreachable (", err, "), serving without cache")
        return nil, err
    end
    if red:get_reused_times() == 0 then
        if password then
            ok, err = red:auth(password)
            if not ok then
                red:close()
                state:set("redis_down", true, DOWN_FOR)
                ngx.log(ngx.ERR, "gateway cache: Redis AUTH failed: ", err)
                return nil, err
            end
        end
        if conf.redis_db ~= 0 then
            ok, err = red:select(conf.redis_db)
            if not ok then
                red:close()
                return nil, err
            end
        end
    end
    return red
end

local function done(red)
    red:set_keepalive(30000, 64)
end

-- A stored value as (status, stored_at, expires_at, headers, body, etag, last_modified); nil
-- if it is not one.
local function decode(value)
    if type(value) ~= "string" then
        return nil
    end
    local status, stored, expires, start = value:match("^gw2\n(%d+)\n([%d.]+)\n([%d.]+)\n()")
    if not status then
        return nil
    end
    local head_end = value:find("\n\n", start - 1, true)
    if not head_end then
        return nil
    end
    local headers, etag, modified = {}, nil, nil
    for name, item in value:sub(start, head_end):gmatch("([^:\n]+): ([^\n]*)\n") do
        local lower = name:lower()
        if lower == "etag" then
            etag = item
        elseif lower == "last-modified" then
            modified = item
        end
        local seen = headers[name]
        if seen == nil then
            headers[name] = item
        elseif type(seen) == "table" then
            seen[#seen + 1] = item
        else
            headers[name] = { seen, item }
        end
    end
    return tonumber(status), tonumber(stored), tonumber(expires), headers, value:sub(head_end + 2), etag, modified
end

-- This worker's decoded copies of recent values, so a HIT does not parse the same bytes again:
-- a copy is used only while the level still holds exactly those bytes (LuaJIT interns strings,
-- so the comparison is one pointer), and the whole memo is dropped past MEMO_BYTES.
local MEMO_BYTES = 4 * 1048576
local memo, memo_bytes = {}, 0

local function decoded(key, value)
    local entry = memo[key]
    if entry and entry[1] == value then
        return entry
    end
    entry = { value, decode(value) }
    if entry[2] then
        if memo_bytes + #value > MEMO_BYTES then
            memo, memo_bytes = {}, 0
        end
        memo[key] = entry
        memo_bytes = memo_bytes + #value
    end
    return entry
end

-- Answer from a stored value and end the request; false when the value is unusable or stale.
local function serve(ctx, value, now)
    local entry = decoded(ctx.cache_key, value)
    local status, stored, expires, headers, body, etag, modified =
        entry[2], entry[3], entry[4], entry[5], entry[6], entry[7], entry[8]
    if not status or expires <= now then
        return false
    end
    ctx.cache = "HIT"
    for name, item in pairs(headers) do
        ngx.header[name] = item
    end
    ngx.header["Age"] = math.max(0, math.floor(now - stored))
    if status == 200 and policy.not_modified(ngx.var.http_if_none_match, ngx.var.http_if_modified_since,
        etag, modified) then
        ngx.header["Content-Type"] = nil
        ngx.status = ngx.HTTP_NOT_MODIFIED
        ngx.send_headers()
        return ngx.exit(ngx.HTTP_OK)
    end
    ngx.status = status
    ngx.header["Content-Length"] = #body
    ngx.print(body)
    return ngx.exit(ngx.HTTP_OK)
end

-- The first level for a value: never longer than its own freshness left.
local function remember(key, value, expires, now)
    local ttl = math.min(conf.cache_l1_ttl_s, expires - now)
    if ttl > 0 then
        l1:set(key, value, ttl)
    end
end

-- Both levels, the first level first. A HIT is answered there and never returns; returns
-- false after a MISS, nil when Redis could not be asked.
local function find(ctx, now)
    local key = ctx.cache_key
    local value = l1:get(key)
    if value and serve(ctx, value, now) ~= false then
        return
    end
    local red = connect()
    if not red then
        return nil
    end
    local err
    value, err = red:get(key)
    if err then
        red:close()
        ngx.log(ngx.WARN, "gateway cache: GET failed: ", err)
        return nil
    end
    done(red)
    if value ~= ngx.null then
        local _, _, expires = decode(value)
        if expires and expires > now then
            remember(key, value, expires, now)
            return serve(ctx, value, now)
        end
    end
    return false
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
            ctx.fill_head = string.format("%s%d\n%.3f\n%.3f\n", FORMAT, status, now, now + life)
                .. table.concat(lines) .. "\n"
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
        ngx.header["X-Cache"] = status
        ngx.var.gw_cache = status
    end
end

local function write(premature, key, value, ttl)
    if premature or ttl < 0.001 then -- stale already (a slow body): nothing to share
        return
    end
    local red = connect()
    if not red then
        return
    end
    local ok, err = red:set(key, value, "PX", math.floor(ttl * 1000))
    if not ok then
        red:close()
        ngx.log(ngx.WARN, "gateway cache: SET failed: ", err)
        return
    end
    done(red)
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
        local value = ctx.fill_head .. table.concat(body)
        local now = ngx.now()
        remember(ctx.cache_key, value, ctx.fill_expires, now)
        local ok, err = ngx.timer.at(0, write, ctx.cache_key, value, ctx.fill_expires - now)
        if not ok then
            ngx.log(ngx.WARN, "gateway cache: cannot schedule the Redis write: ", err)
        end
    end
    release(ctx)
end

return M
