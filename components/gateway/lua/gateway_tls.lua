-- The gateway's ACME certificate, served from the shared volume at handshake time
-- (ssl_certificate_by_lua). The ACME sidecar replaces one PEM file (chain, then key) by a
-- rename; each worker reads it at most every `check_interval_s` (every second while it has
-- none yet) and keeps the parsed chain and key, so a handshake costs no file I/O or parsing.
-- A renewal is picked up by the next handshake: no reload, no signal, nothing dropped.
local ssl = require("ngx.ssl")

local M = {}

local pem_path
local check_interval_s = 60
local current -- { pem, cert, key } in use
local rejected_pem -- content already found unusable: not parsed again
local checked_at = -math.huge

function M.init(config)
    pem_path = config.pem_path
    check_interval_s = config.check_interval_s
end

local function read_file(path)
    local file = io.open(path, "rb")
    if not file then
        return nil
    end
    local data = file:read("*a")
    file:close()
    return data
end

-- A new, parsed { pem, cert, key } when the file changed since the last look; else nil.
local function changed()
    local now = ngx.now()
    if now - checked_at < (current and check_interval_s or 1) then
        return nil
    end
    checked_at = now
    local pem = read_file(pem_path)
    if not pem or (current and pem == current.pem) or pem == rejected_pem then
        return nil
    end
    local cert, err = ssl.parse_pem_cert(pem)
    local key
    if cert then
        key, err = ssl.parse_pem_priv_key(pem)
    end
    if not key then
        rejected_pem = pem
        ngx.log(ngx.ERR, "tls: ", pem_path, " holds no certificate chain and key: ", err)
        return nil
    end
    return { pem = pem, cert = cert, key = key }
end

local function install(pair)
    local ok, err = ssl.clear_certs()
    if ok then
        ok, err = ssl.set_cert(pair.cert)
    end
    if ok then
        -- OpenSSL refuses a key that does not match the certificate here
        ok, err = ssl.set_priv_key(pair.key)
    end
    return ok, err
end

function M.certificate()
    local candidate = changed()
    if candidate then
        local ok, err = install(candidate)
        if ok then
            current = candidate
            ngx.log(ngx.NOTICE, "tls: serving the certificate of ", pem_path)
            return
        end
        rejected_pem = candidate.pem
        ngx.log(ngx.ERR, "tls: ", pem_path, " is unusable (", err, "); keeping the previous certificate")
    end
    if not current then
        -- Before the first issuance: refuse the handshake (the HTTP port still serves the
        -- ACME challenge and the health check).
        return ngx.exit(ngx.ERROR)
    end
    local ok, err = install(current)
    if not ok then
        ngx.log(ngx.ERR, "tls: cannot set the certificate: ", err)
        return ngx.exit(ngx.ERROR)
    end
end

return M
