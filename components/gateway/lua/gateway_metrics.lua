-- Request counters in a shared dict, exposed in the Prometheus text format on the internal
-- metrics port:
--   nginx_http_requests_total{route,status}
--   nginx_http_request_duration_seconds{route} (histogram: _bucket{le}, _sum, _count)
--   nginx_cache_requests_total{route,result}        result = hit | miss | bypass
-- `route` is the service name of a routed request, "none" for anything else.
-- Each worker adds up its requests in a Lua table and moves the sums into the shared dict
-- every FLUSH_S (and before it answers a scrape), so a request costs no shared-dict lock;
-- a scrape sees another worker's last FLUSH_S late.

local ngx = ngx
local dict = ngx.shared.gw_metrics

local M = {}

local BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local BUCKET_LABELS = { "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10" }
local SEP = "\t"
local RESULTS = { HIT = "hit", MISS = "miss", BYPASS = "bypass" }
local FLUSH_S = 0.5
local pending = {}
local flushing = false

local function flush(premature)
    local sums = pending
    pending = {}
    for key, value in pairs(sums) do
        local ok, err = dict:incr(key, value, 0)
        if not ok then
            ngx.log(ngx.WARN, "gateway metrics: cannot count ", key, ": ", err)
        end
    end
end

local function add(key, value)
    pending[key] = (pending[key] or 0) + value
    if not flushing then
        flushing = ngx.timer.every(FLUSH_S, flush) ~= nil
    end
end

function M.observe(route, status, seconds, cache)
    if route == nil or route == "" then
        route = "none"
    end
    add("req" .. SEP .. route .. SEP .. status, 1)
    local index = #BUCKETS + 1
    for i, le in ipairs(BUCKETS) do
        if seconds <= le then
            index = i
            break
        end
    end
    add("bucket" .. SEP .. route .. SEP .. index, 1)
    add("sum" .. SEP .. route, seconds)
    if cache then
        add("cache" .. SEP .. route .. SEP .. (RESULTS[cache] or cache:lower()), 1)
    end
end

local function escape(value)
    return (tostring(value):gsub("\\", "\\\\"):gsub("\n", "\\n"):gsub('"', '\\"'))
end

local function count(value)
    return string.format("%d", value)
end

local function split(key)
    local parts = {}
    for part in key:gmatch("[^\t]+") do
        parts[#parts + 1] = part
    end
    return parts
end

function M.collect()
    flush()
    local requests, caches, routes = {}, {}, {}
    local buckets, sums = {}, {}
    for _, key in ipairs(dict:get_keys(0)) do
        local value = dict:get(key)
        local parts = split(key)
        local kind, route = parts[1], parts[2]
        if value and route then
            if kind == "req" then
                requests[#requests + 1] = { route, parts[3], value }
            elseif kind == "cache" then
                caches[#caches + 1] = { route, parts[3], value }
            elseif kind == "bucket" then
                if not buckets[route] then
                    buckets[route] = {}
                    routes[#routes + 1] = route
                end
                buckets[route][tonumber(parts[3])] = value
            elseif kind == "sum" then
                sums[route] = value
            end
        end
    end
    local function by_labels(a, b)
        if a[1] ~= b[1] then
            return a[1] < b[1]
        end
        return a[2] < b[2]
    end
    table.sort(requests, by_labels)
    table.sort(caches, by_labels)
    table.sort(routes)

    local out = {
        "# HELP nginx_http_requests_total Requests answered by the gateway.",
        "# TYPE nginx_http_requests_total counter",
    }
    for _, s in ipairs(requests) do
        out[#out + 1] = string.format('nginx_http_requests_total{route="%s",status="%s"} %s', escape(s[1]), escape(s[2]), count(s[3]))
    end
    out[#out + 1] = "# HELP nginx_http_request_duration_seconds Time from the first request byte to the last answer byte."
    out[#out + 1] = "# TYPE nginx_http_request_duration_seconds histogram"
    for _, route in ipairs(routes) do
        local label = escape(route)
        local seen = buckets[route]
        local cumulative = 0
        for i, le in ipairs(BUCKET_LABELS) do
            cumulative = cumulative + (seen[i] or 0)
            out[#out + 1] = string.format('nginx_http_request_duration_seconds_bucket{route="%s",le="%s"} %s', label, le, count(cumulative))
        end
        -- +Inf and _count both are the sum of all buckets, so they always agree
        local total = count(cumulative + (seen[#BUCKETS + 1] or 0))
        out[#out + 1] = string.format('nginx_http_request_duration_seconds_bucket{route="%s",le="+Inf"} %s', label, total)
        out[#out + 1] = string.format('nginx_http_request_duration_seconds_sum{route="%s"} %.6f', label, sums[route] or 0)
        out[#out + 1] = string.format('nginx_http_request_duration_seconds_count{route="%s"} %s', label, total)
    end
    out[#out + 1] = "# HELP nginx_cache_requests_total Cache outcomes of routed requests."
    out[#out + 1] = "# TYPE nginx_cache_requests_total counter"
    for _, s in ipairs(caches) do
        out[#out + 1] = string.format('nginx_cache_requests_total{route="%s",result="%s"} %s', escape(s[1]), escape(s[2]), count(s[3]))
    end
    ngx.header["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
    ngx.print(table.concat(out, "\n"), "\n")
end

return M
