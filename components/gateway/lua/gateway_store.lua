-- The cache's two levels and its stored format, for gateway_cache:
--   first level  shared dict gw_l1 in this gateway's memory: a value stays cache_l1_ttl_s at
--                most, never past its own freshness; least recently used values go when full
--   Redis        the level every gateway replica shares; written from a timer (a filter
--                phase cannot use sockets), read when the first level has nothing
-- A value is FORMAT status \n stored_at \n expires_at \n (name: value \n)* \n body, times in
-- seconds with milliseconds (a lifetime of 1 s is a second, not what is left of the current one).
--
-- Redis trouble never fails a request: `get` says Redis could not be asked, and after a
-- connection error Redis is left alone for a few seconds so requests do not each wait for it.
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
local l1 = ngx.shared.gw_l1

local M = {}
M.require_any = require_any
local conf = {}
local password
local FORMAT = "gw2\n"
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

-- A stored value as an entry { raw, status, stored, expires, headers (name -> value or list),
-- names, body, etag, modified }; nil if it is not one.
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
    local headers, list, etag, modified = {}, {}, nil, nil
    for name, item in value:sub(start, head_end):gmatch("([^:\n]+): ([^\n]*)\n") do
        list[#list + 1] = name
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
    -- the names once each, in order, for a loop the JIT compiles (`pairs` may not be)
    local names, seen_name = {}, {}
    for _, name in ipairs(list) do
        if not seen_name[name] then
            seen_name[name] = true
            names[#names + 1] = name
        end
    end
    return {
        raw = value, status = tonumber(status), stored = tonumber(stored), expires = tonumber(expires),
        headers = headers, names = names, body = value:sub(head_end + 2), etag = etag, modified = modified,
    }
end

-- This worker's decoded copies of recent values, so a HIT does not parse the same bytes again:
-- a copy is used only while the level still holds exactly those bytes (LuaJIT interns strings,
-- so the comparison is one pointer), and the whole memo is dropped past MEMO_BYTES.
local MEMO_BYTES = 4 * 1048576
local memo, memo_bytes = {}, 0

-- The entry of a value if it is one and still fresh, else nil.
local function fresh(key, value, now)
    local entry = memo[key]
    if not (entry and entry.raw == value) then
        entry = decode(value)
        if not entry then
            return nil
        end
        if memo_bytes + #value > MEMO_BYTES then
            memo, memo_bytes = {}, 0
        end
        memo[key] = entry
        memo_bytes = memo_bytes + #value
    end
    if entry.expires <= now then
        return nil
    end
    return entry
end

-- The first level for a value: never longer than its own freshness left.
local function remember(key, value, expires, now)
    local ttl = math.min(conf.cache_l1_ttl_s, expires - now)
    if ttl > 0 then
        l1:set(key, value, ttl)
    end
end

-- The fresh entry of a key from the first level, else from Redis (kept in the first level
-- then); false when neither has one, nil when Redis could not be asked.
function M.get(key, now)
    local value = l1:get(key)
    local entry = value and fresh(key, value, now)
    if entry then
        return entry
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
    entry = value ~= ngx.null and fresh(key, value, now)
    if not entry then
        return false
    end
    remember(key, value, entry.expires, now)
    return entry
end

-- The start of a value: everything but the body.
function M.head(status, now, expires, header_lines)
    return string.format("%s%d\n%.3f\n%.3f\n", FORMAT, status, now, expires) .. table.concat(header_lines) .. "\n"
end

local function write_redis(premature, key, value, ttl)
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

-- Store a complete value in both levels: the first at once (requests waiting for this fill
-- find it there), Redis from a timer.
function M.put(key, value, expires, now)
    remember(key, value, expires, now)
    local ok, err = ngx.timer.at(0, write_redis, key, value, expires - now)
    if not ok then
        ngx.log(ngx.WARN, "gateway cache: cannot schedule the Redis write: ", err)
    end
end

return M
