-- The response cache in Redis.
--
-- Cacheable: a GET without Authorization on a route whose TTL is above 0. Stored: a complete
-- 200 answer without Set-Cookie, not marked no-store/private/no-cache, up to the size limit.
-- X-Cache says HIT (served from Redis), MISS (looked up, fetched from the backend) or BYPASS
-- (request or answer not cacheable). The key is route + host + path + query string.
--
-- Redis trouble never fails a request: the lookup counts as a MISS, and after a connection
-- error Redis is left alone for a few seconds so requests do not each wait for it.
-- The password comes from the environment (GATEWAY_REDIS_PASSWORD, a container secret),
-- never from nginx.conf.

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

-- Access phase: answer a HIT from Redis and end the request; otherwise note MISS or BYPASS.
function M.lookup(route, ctx)
    if not cacheable_request(route) then
        ctx.cache = "BYPASS"
        return
    end
    ctx.cache = "MISS"
    ctx.cache_key = "gw:" .. route.name .. ":" .. (ngx.var.host or "") .. ngx.var.uri .. "?" .. (ngx.var.args or "")
    local red = connect()
    if not red then
        ctx.no_store = true
        return
    end
    local value, err = red:get(ctx.cache_key)
    if err then
        red:close()
        ngx.log(ngx.WARN, "gateway cache: GET failed: ", err)
        ctx.no_store = true
        return
    end
    done(red)
    if value == ngx.null or value == nil or value:sub(1, #FORMAT) ~= FORMAT then
        return
    end
    local newline = value:find("\n", #FORMAT + 1, true)
    if not newline then
        return
    end
    ctx.cache = "HIT"
    ngx.status = ngx.HTTP_OK
    local content_type = value:sub(#FORMAT + 1, newline - 1)
    if content_type ~= "" then
        ngx.header["Content-Type"] = content_type
    end
    ngx.print(value:sub(newline + 1))
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

function M.header_filter(ctx)
    local status = ctx.cache
    if status == nil then
        return
    end
    if status == "MISS" then
        local headers = ngx.header
        if no_store(headers) then
            status = "BYPASS"
        elseif ngx.status == ngx.HTTP_OK and not ctx.no_store and not headers["Content-Encoding"] then
            ctx.store = true
            ctx.content_type = headers["Content-Type"] or ""
            ctx.parts = {}
            ctx.size = 0
        end
    end
    ctx.cache = status
    ngx.header["X-Cache"] = status
    ngx.var.gw_cache = status
end

function M.body_filter(ctx)
    if not ctx.store then
        return
    end
    local chunk = ngx.arg[1]
    if chunk and chunk ~= "" then
        ctx.size = ctx.size + #chunk
        if ctx.size > conf.cache_max_body_bytes then
            ctx.store, ctx.parts = false, nil
            return
        end
        ctx.parts[#ctx.parts + 1] = chunk
    end
    if ngx.arg[2] then
        ctx.complete = true
    end
end

local function write(premature, key, ttl, value)
    if premature then
        return
    end
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

-- Log phase (no sockets there): hand a complete answer to a timer that writes it.
function M.store(ctx)
    if not (ctx.store and ctx.complete and ctx.parts) then
        return
    end
    if ngx.var.request_completion ~= "OK" then
        return
    end
    local value = FORMAT .. ctx.content_type .. "\n" .. table.concat(ctx.parts)
    local ok, err = ngx.timer.at(0, write, ctx.cache_key, ctx.route.cache_ttl_s, value)
    if not ok then
        ngx.log(ngx.WARN, "gateway cache: cannot schedule the store: ", err)
    end
end

return M
