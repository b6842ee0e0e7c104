-- What a shared cache may store and for how long (RFC 9111), as functions of headers only:
-- no I/O here, gateway_cache does the storing.
--
-- Request: only a GET without Authorization, Cookie or Range, and without `no-store`, is looked
-- up or stored. Request `no-cache`/`max-age=0` are ignored on purpose: a client must not be able
-- to push every request through to the backend.
-- Answer: stored only when all of these hold
--   status 200, 203, 204, 300, 301, 308, 404 or 410 (cacheable by default, RFC 9110 15.1);
--   no Set-Cookie, no Content-Encoding (the gateway asks for identity and gzips itself);
--   no Vary other than Accept-Encoding (the gateway stores one identity body per key; any
--   other Vary names request state the key does not hold, so the answer is not shared);
--   Cache-Control without no-store, private or no-cache, and no `Pragma: no-cache`;
--   a freshness lifetime above 0: s-maxage, else max-age, else Expires - Date (an Expires in
--   the past or unparseable is 0), else the route TTL; always capped by the route TTL, less
--   the Age the backend already reports.

local ngx = ngx

local M = {}

local STORABLE_STATUS = {
    [200] = true, [203] = true, [204] = true, [300] = true, [301] = true, [308] = true, [404] = true, [410] = true,
}

-- A header's value, with repeated fields joined as one list.
local function joined(value)
    if type(value) == "table" then
        return table.concat(value, ", ")
    end
    return value
end
M.joined = joined

-- Cache-Control directives: lowercase name -> argument string, or true without one.
-- A part that does not parse (a quoted list cut by the comma split) is ignored; its directive
-- name, when it starts the part, is still seen.
function M.directives(value)
    local out = {}
    value = joined(value)
    if not value then
        return out
    end
    for part in value:gmatch("[^,]+") do
        local name, arg = part:match('^%s*([%w-]+)%s*=%s*"?([^"]*)"?%s*$')
        if name then
            out[name:lower()] = arg
        else
            name = part:match("^%s*([%w-]+)")
            if name then
                out[name:lower()] = true
            end
        end
    end
    return out
end

-- nil when the request may use the cache, else why not.
function M.request_bypass(method, authorization, cookie, range, cache_control)
    if method ~= "GET" then
        return "method"
    end
    if authorization then
        return "authorization"
    end
    if cookie then
        return "cookie"
    end
    if range then
        return "range"
    end
    if cache_control and M.directives(cache_control)["no-store"] then
        return "no-store"
    end
    return nil
end

local function seconds(arg)
    -- A directive without a number (`max-age`, `max-age=soon`) gives no freshness at all.
    local n = tonumber(arg)
    if not n then
        return 0
    end
    return math.floor(n)
end

-- The seconds an answer may be served from the shared cache, or nil and why it may not be
-- stored. `headers` are the answer's (lowercase names), `ttl` the route's upper bound.
function M.lifetime(status, headers, ttl, now)
    if not STORABLE_STATUS[status] then
        return nil, "status"
    end
    if headers["set-cookie"] then
        return nil, "set-cookie"
    end
    if headers["content-encoding"] then
        return nil, "content-encoding"
    end
    local vary = joined(headers["vary"])
    if vary then
        for field in vary:gmatch("[^,%s]+") do
            if field:lower() ~= "accept-encoding" then
                return nil, "vary"
            end
        end
    end
    local control = M.directives(headers["cache-control"])
    if control["no-store"] or control["private"] or control["no-cache"] then
        return nil, "cache-control"
    end
    local pragma = joined(headers["pragma"])
    if pragma and pragma:lower():find("no-cache", 1, true) then
        return nil, "pragma"
    end
    local life
    if control["s-maxage"] ~= nil then
        life = seconds(control["s-maxage"])
    elseif control["max-age"] ~= nil then
        life = seconds(control["max-age"])
    elseif headers["expires"] then
        local expires = ngx.parse_http_time(joined(headers["expires"]))
        local date = headers["date"] and ngx.parse_http_time(joined(headers["date"])) or now
        life = expires and (expires - date) or 0
    else
        life = ttl
    end
    life = math.min(life, ttl) - seconds(joined(headers["age"]) or 0)
    if life <= 0 then
        return nil, "stale"
    end
    return life
end

-- True when a conditional GET may be answered 304 from a stored 200 with these validators
-- (If-None-Match wins over If-Modified-Since; weak comparison, as for GET).
function M.not_modified(if_none_match, if_modified_since, etag, last_modified)
    if if_none_match then
        if not etag then
            return false
        end
        if if_none_match:match("^%s*%*%s*$") then
            return true
        end
        local tag = etag:gsub("^W/", "")
        for candidate in if_none_match:gmatch("[^,]+") do
            candidate = candidate:match("^%s*(.-)%s*$"):gsub("^W/", "")
            if candidate == tag then
                return true
            end
        end
        return false
    end
    if if_modified_since and last_modified then
        local since, modified = ngx.parse_http_time(if_modified_since), ngx.parse_http_time(last_modified)
        return since ~= nil and modified ~= nil and modified <= since
    end
    return false
end

return M
