-- The response cache in Redis.
--
-- Cacheable: a GET without Authorization on a route whose TTL is above 0. Stored: a complete
-- 200 answer without Set-Cookie, not marked no-store/private/no-cache, up to the size limit.
-- A cacheable request is fetched through ngx.location.capture and stored before it is
-- answered; everything else is proxied (streamed) without Lua touching the body.
-- X-Cache says HIT (served from Redis), MISS (looked up, fetched from the backend) or BYPASS
-- (request or answer not cacheable). The key is route + host + path + query string.
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

local ngx = ngx
local state = ngx.shared.gw_state

local M = {}
M.require_any = require_any
local conf = {}
local password
local FORMAT = "gw1\n" -- stored value: FORMAT .. content type .. "\n" .. body
local DOWN_FOR = 2 -- seconds Redis is skipped after a failure

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

local function cacheable_request(route)
    return route.cache_ttl_s > 0 and ngx.req.get_method() == "GET" and not ngx.var.http_authorization
end

-- Access phase: answer a HIT from Redis and end the request. Returns true for a cacheable
-- request that missed (the caller then calls fetch), false for one that bypasses the cache.
function M.lookup(route, ctx)
    if not cacheable_request(route) then
        ctx.cache = "BYPASS"
        return false
    end
    ctx.cache = "MISS"
    ctx.cache_key = "gw:" .. route.name .. ":" .. (ngx.var.host or "") .. ngx.var.uri .. "?" .. (ngx.var.args or "")
    local red = connect()
    if not red then
        ctx.no_store = true
        return true
    end
    local value, err = red:get(ctx.cache_key)
    if err then
        red:close()
        ngx.log(ngx.WARN, "gateway cache: GET failed: ", err)
        ctx.no_store = true
        return true
    end
    done(red)
    if value == ngx.null or value == nil or value:sub(1, #FORMAT) ~= FORMAT then
        return true
    end
    local newline = value:find("\n", #FORMAT + 1, true)
    if not newline then
        return true
    end
    ctx.cache = "HIT"
    ngx.status = ngx.HTTP_OK
    local content_type = value:sub(#FORMAT + 1, newline - 1)
    if content_type ~= "" then
        ngx.header["Content-Type"] = content_type
    end
    local body = value:sub(newline + 1)
    ngx.header["Content-Length"] = #body
    ngx.print(body)
    return ngx.exit(ngx.HTTP_OK)
end

local function no_store(headers)
    if headers["Set-Cookie"] then
        return true
    end
    local control = headers["Cache-Control"]
    if type(control) == "table" then
        control = table.concat(control, ",")
    end
    if control then
        control = control:lower()
        if control:find("no-store", 1, true) or control:find("private", 1, true) or control:find("no-cache", 1, true) then
            return true
        end
    end
    return false
end

local function write(key, ttl, value)
    local red = connect()
    if not red then
        return
    end
    local ok, err = red:set(key, value, "EX", ttl)
    if not ok then
        red:close()
        ngx.log(ngx.WARN, "gateway cache: SET failed: ", err)
        return
    end
    done(red)
end

local HOP_BY_HOP = {
    ["connection"] = true, ["keep-alive"] = true, ["transfer-encoding"] = true, ["content-length"] = true,
    ["te"] = true, ["trailer"] = true, ["upgrade"] = true,
}

-- Access phase, after a MISS: fetch the answer through the route's internal location (the same
-- proxy, balancer and keepalive as every other request), store it before answering -- so the
-- next request is a HIT -- and send it. The answer is buffered whole; only GETs come here.
function M.fetch(route, ctx)
    local rest = ngx.var.uri:sub(#route.path_prefix + 1)
    local uri = "/_gw/" .. route.name .. "/" .. ngx.escape_uri(rest, 0)
    ngx.req.set_header("X-Request-ID", ngx.var.request_id)
    ngx.update_time()
    local started = ngx.now()
    local res = ngx.location.capture(uri, { method = ngx.HTTP_GET, args = ngx.var.args, ctx = ctx })
    ngx.update_time()
    ngx.var.gw_upstream_time = string.format("%.3f", ngx.now() - started)
    ngx.var.gw_upstream_addr = ctx.peer .. ":" .. ctx.port
    ngx.var.gw_upstream_status = res.status
    if res.truncated then
        ngx.log(ngx.ERR, "gateway: truncated answer from ", ctx.peer, ":", ctx.port, " for ", uri)
        return ngx.exit(ngx.HTTP_BAD_GATEWAY)
    end
    local headers = res.header
    if no_store(headers) then
        ctx.cache = "BYPASS"
    elseif res.status == ngx.HTTP_OK and not ctx.no_store and not headers["Content-Encoding"]
        and #res.body <= conf.cache_max_body_bytes then
        local content_type = headers["Content-Type"] or ""
        if type(content_type) == "table" then
            content_type = content_type[1]
        end
        write(ctx.cache_key, route.cache_ttl_s, FORMAT .. content_type .. "\n" .. res.body)
    end
    ngx.status = res.status
    for name, value in pairs(headers) do
        if not HOP_BY_HOP[name:lower()] then
            ngx.header[name] = value
        end
    end
    ngx.header["Content-Length"] = #res.body
    ngx.print(res.body)
    return ngx.exit(ngx.HTTP_OK)
end

-- Header filter of every routed request: tell the client what the cache did.
function M.header_filter(ctx)
    local status = ctx.cache
    if status then
        ngx.header["X-Cache"] = status
        ngx.var.gw_cache = status
    end
end

return M
