-- The gateway's request path, called from the nginx.conf rendered by render.py:
--   access        bound the time a request body may take; serve a cache HIT; else resolve the
--                 route's service name at run time and pick the replica with the fewest
--                 requests in flight; the request then goes on to proxy_pass (a MISS too:
--                 the cache copies the answer aside while it streams to the client)
--   balance       (balancer_by_lua) hand the chosen replica to the keepalive upstream
--   header_filter X-Cache, and whether a fill's answer may be stored
--   body_filter   (cached routes) copy a fill's body aside, up to the size cap
--   log           release the replica and any fill lock, count the request
--
-- Service names resolve through the configured DNS server (Docker's 127.0.0.11), whose answer
-- for a service alias is every replica's address. Answers are cached in a shared dict for a
-- few seconds, so replicas that come and go are followed without a reload, and nginx starts
-- while no backend exists yet.

local balancer = require "ngx.balancer"
local cache = require "gateway_cache"
local guard = require "gateway_guard"
local metrics = require "gateway_metrics"


local dns = cache.require_any("resty.dns.resolver", "nginx.dns.resolver")

local ngx = ngx
local dns_dict = ngx.shared.gw_dns
local inflight = ngx.shared.gw_conns

local M = {}
local routes = {}
local conf = {}

local IPV4 = "^%d+%.%d+%.%d+%.%d+$"
local NEGATIVE_TTL = 1 -- seconds an unknown name is remembered as unknown
local STALE_TTL = 3600 -- last good answer, used while the DNS server does not answer

function M.init(config)
    conf = config
    routes = {}
    for _, route in ipairs(config.routes) do
        routes[route.name] = route
    end
    cache.init(config)
    guard.init(config)
end

local function split(list)
    local out = {}
    for item in list:gmatch("[^,]+") do
        out[#out + 1] = item
    end
    return out
end

local function stale(host, err)
    local last = dns_dict:get("stale:" .. host)
    if last then
        ngx.log(ngx.WARN, "gateway: DNS lookup of ", host, " failed (", err, "), using the last answer")
        return split(last)
    end
    return nil, err
end

-- The IPv4 addresses of a host: an IP literal as is, a name through the DNS server.
local function resolve(host)
    if host:find(IPV4) then
        return { host }
    end
    local cached = dns_dict:get("a:" .. host)
    if cached then
        if cached == "" then
            return nil, "no address (cached)"
        end
        return split(cached)
    end
    local resolver, err = dns:new({ nameservers = conf.nameservers, retrans = 2, timeout = 1000 })
    if not resolver then
        return stale(host, err)
    end
    local answers
    answers, err = resolver:query(host, { qtype = resolver.TYPE_A })
    if not answers then
        return stale(host, err)
    end
    if answers.errcode and answers.errcode ~= 3 then
        return stale(host, answers.errstr)
    end
    local ips, ttl = {}, conf.dns_ttl_s
    for _, answer in ipairs(answers) do
        if answer.type == resolver.TYPE_A and answer.address then
            ips[#ips + 1] = answer.address
            if answer.ttl and answer.ttl < ttl then
                ttl = answer.ttl
            end
        end
    end
    if #ips == 0 then
        -- NXDOMAIN or no A record: the service is not (yet) there.
        dns_dict:set("a:" .. host, "", NEGATIVE_TTL)
        return nil, "no address"
    end
    table.sort(ips)
    local joined = table.concat(ips, ",")
    dns_dict:set("a:" .. host, joined, math.max(ttl, 1))
    dns_dict:set("stale:" .. host, joined, STALE_TTL)
    return ips
end

local function peer_key(ip, port)
    return "c:" .. ip .. ":" .. port
end

-- Least connections across replicas: the fewest requests in flight (counted in a dict every
-- worker shares); ties go round robin so idle replicas share the load.
local function pick(route, ips, exclude)
    local n = #ips
    local start = (inflight:incr("rr:" .. route.name, 1, 0) or 0) % n
    local best, best_count
    for i = 0, n - 1 do
        local ip = ips[(start + i) % n + 1]
        if not (exclude and exclude[ip]) then
            local count = inflight:get(peer_key(ip, route.port)) or 0
            if best == nil or count < best_count then
                best, best_count = ip, count
            end
        end
    end
    return best
end

local function take(ctx, ip)
    ctx.peer = ip
    ctx.peer_key = peer_key(ip, ctx.port)
    inflight:incr(ctx.peer_key, 1, 0)
end

local function release(ctx)
    if ctx.peer_key then
        local left = inflight:incr(ctx.peer_key, -1, 0)
        if left and left < 0 then
            inflight:set(ctx.peer_key, 0)
        end
        ctx.peer_key = nil
    end
end

function M.access(name)
    local route = routes[name]
    local ctx = ngx.ctx
    ctx.route = route
    guard.body()
    cache.lookup(route, ctx) -- a HIT is answered there and never returns
    local ips, err = resolve(route.host)
    if not ips then
        ngx.log(ngx.ERR, "gateway: route ", name, ": cannot resolve ", route.host, ": ", err)
        return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
    end
    ctx.ips = ips
    ctx.port = route.port
    take(ctx, pick(route, ips))
end

function M.balance()
    local ctx = ngx.ctx
    if not ctx.peer then
        ngx.log(ngx.ERR, "gateway: balancer reached without a chosen peer")
        return ngx.exit(ngx.ERROR)
    end
    if balancer.get_last_failure() then
        -- A retry after a connect error: move to another replica if one is left.
        ctx.tried = ctx.tried or {}
        ctx.tried[ctx.peer] = true
        local other = pick(ctx.route, ctx.ips, ctx.tried)
        if other then
            release(ctx)
            take(ctx, other)
        end
    elseif #ctx.ips > 1 then
        balancer.set_more_tries(math.min(#ctx.ips - 1, 2))
    end
    local ok, err = balancer.set_current_peer(ctx.peer, ctx.port)
    if not ok then
        ngx.log(ngx.ERR, "gateway: cannot set peer ", ctx.peer, ": ", err)
        return ngx.exit(ngx.ERROR)
    end
end

function M.header_filter()
    cache.header_filter(ngx.ctx)
end

function M.body_filter()
    cache.body_filter(ngx.ctx)
end

function M.log()
    local ctx = ngx.ctx
    release(ctx)
    cache.release(ctx)
    metrics.observe(ngx.var.gw_route, ngx.status, ngx.now() - ngx.req.start_time(), ctx.cache)
end

return M
