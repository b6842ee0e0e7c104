-- A deadline for the whole request body. nginx's client_body_timeout only bounds the gap
-- between two reads, so a body trickled a byte a second holds a connection for as long as
-- the client likes. Here the body is read (by nginx, into memory or a temp file as usual)
-- in a light thread racing a timer: body_timeout_s plus the time the announced length takes
-- at min_body_rate bytes/s (the size limit for a chunked body). The loser is killed; a body
-- that is late ends the request with 408.

local ngx = ngx
local spawn, wait, kill = ngx.thread.spawn, ngx.thread.wait, ngx.thread.kill

local M = {}
local conf = {}

function M.init(config)
    conf = config
end

local function read()
    ngx.req.read_body()
    return "read"
end

local function late(seconds)
    ngx.sleep(seconds)
    return "late"
end

function M.body()
    local var = ngx.var
    local length = tonumber(var.http_content_length)
    if not var.http_transfer_encoding and (length or 0) == 0 then
        return
    end
    local seconds = conf.body_timeout_s + (length or conf.client_max_body_bytes) / conf.min_body_rate
    local reader, timer = spawn(read), spawn(late, seconds)
    local _, outcome = wait(reader, timer)
    if outcome == "read" then
        kill(timer)
        return
    end
    kill(reader)
    ngx.log(ngx.WARN, "gateway: request body not complete after ", seconds, " s, closing")
    return ngx.exit(ngx.HTTP_REQUEST_TIMEOUT)
end

return M
